//! SQL given to a database client, parsed with a real SQL parser and reduced
//! to what the policy needs: each statement's kind, the objects it touches,
//! and whether an UPDATE or DELETE is unbounded.

use sqlparser::ast::{
    AlterTableOperation, Expr, FromTable, ObjectType, Query, SetExpr, Statement, Value,
};
use sqlparser::dialect::{Dialect, GenericDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

/// One statement, reduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    /// `select`, `insert`, `update`, `delete`, `drop`, `truncate`,
    /// `alter-drop`, `alter`, `create`, `grant`, `revoke`, `copy`,
    /// `copy-program`, `shell-escape`, `include-file`, `client-command`,
    /// `call` (a SELECT of a function that changes server state),
    /// `set`, `show`, `explain`, `transaction`, or `other`.
    pub kind: &'static str,
    /// An UPDATE or DELETE without a WHERE (or with a WHERE that is always true).
    pub unbounded: bool,
    /// Tables and other objects named.
    pub objects: Vec<String>,
}

/// Parses the SQL text a client would run. Client meta-commands (`\d`, `\!`,
/// `\i`) are recognised before parsing.
pub fn statements(client: &str, text: &str) -> Result<Vec<Stmt>, String> {
    let mut out = Vec::new();
    let mut sql = String::with_capacity(text.len());
    for line in text.lines() {
        let l = line.trim_start();
        if let Some(meta) = l.strip_prefix('\\') {
            out.push(meta_command(meta));
            continue;
        }
        let lower = l.to_ascii_lowercase();
        if matches!(client, "mysql" | "mariadb")
            && (lower.starts_with("system ") || lower.starts_with("source "))
        {
            out.push(Stmt {
                kind: if lower.starts_with("system") {
                    "shell-escape"
                } else {
                    "include-file"
                },
                unbounded: false,
                objects: Vec::new(),
            });
            continue;
        }
        if client == "sqlite3" && l.starts_with('.') {
            let name = lower.split_whitespace().next().unwrap_or("");
            let kind = match name {
                ".shell" | ".system" => "shell-escape",
                ".read" => "include-file",
                ".tables" | ".schema" | ".indexes" | ".indices" | ".databases" | ".dump"
                | ".headers" | ".mode" | ".help" | ".show" | ".width" | ".timer" | ".stats"
                | ".fullschema" | ".dbinfo" | ".quit" | ".exit" | ".print" | ".eqp"
                | ".explain" | ".nullvalue" | ".separator" | ".changes" | ".lint" | ".sha3sum"
                | ".selftest" | ".version" => "show",
                _ => "client-command",
            };
            out.push(Stmt {
                kind,
                unbounded: false,
                objects: Vec::new(),
            });
            continue;
        }
        sql.push_str(line);
        sql.push('\n');
    }
    if sql.trim().is_empty() {
        return Ok(out);
    }
    let dialect: Box<dyn Dialect> = match client {
        "psql" | "cockroach" => Box::new(PostgreSqlDialect {}),
        "mysql" | "mariadb" => Box::new(MySqlDialect {}),
        "sqlite3" => Box::new(SQLiteDialect {}),
        _ => Box::new(GenericDialect {}),
    };
    let parsed = Parser::parse_sql(dialect.as_ref(), &sql)
        .or_else(|_| Parser::parse_sql(&GenericDialect {}, &sql))
        .map_err(|e| e.to_string())?;
    for s in &parsed {
        out.push(reduce(s));
    }
    Ok(out)
}

/// Functions that change server state, run statements given as text, read
/// or write files, or read the environment, even inside a SELECT.
fn has_side_effects(sql: &str) -> bool {
    const CALLS: &[&str] = &[
        // PostgreSQL: statements given as text run, files and settings read.
        "query_to_xml",
        "query_to_xmlschema",
        "cursor_to_xml",
        "pg_ls_",
        "pg_stat_file",
        "pg_logdir_ls",
        "lo_from_bytea",
        "lo_put",
        "lo_get",
        "pg_execute_server_program",
        // SQLite and DuckDB: files, editors, extensions, the environment.
        "readfile(",
        "writefile(",
        "edit(",
        "load_extension",
        "fts3_tokenizer",
        "read_text(",
        "read_blob(",
        "read_csv",
        "read_json",
        "read_parquet",
        "read_ndjson",
        "getenv(",
        // ClickHouse table functions that read files, URLs or run programs.
        "file(",
        "url(",
        "executable(",
        "s3(",
        "remote(",
        "remotesecure(",
        "hdfs(",
        // MySQL and SQL Server.
        "load data",
        "xp_cmdshell",
        "openrowset",
        "opendatasource",
        "bulk insert",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_drop_replication_slot",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_promote",
        "pg_switch_wal",
        "lo_unlink",
        "lo_import",
        "lo_export",
        "dblink_exec",
        "dblink",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_file_write",
        "set_config",
        "setval",
        "pg_advisory_lock",
        "pg_create_",
        "pg_replication_origin_",
        "sys_exec",
        "sys_eval",
        "load_file",
        "into outfile",
        "into dumpfile",
        "sleep(",
        "pg_sleep",
    ];
    let lower = sql.to_ascii_lowercase();
    // A call pattern must start a name (`file(` is not `profile(`).
    CALLS.iter().any(|c| {
        lower.match_indices(c).any(|(i, _)| {
            !c.ends_with('(')
                || !lower[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|p| p.is_ascii_alphanumeric() || p == '_')
        })
    })
}

fn meta_command(meta: &str) -> Stmt {
    let name: String = meta.chars().take_while(|c| !c.is_whitespace()).collect();
    let kind = match name.as_str() {
        "!" => "shell-escape",
        "i" | "ir" | "include" | "include_relative" => "include-file",
        "o" | "out" | "w" | "write" | "copy" | "g" | "gexec" | "gset" => "client-command",
        _ => "show",
    };
    let kind = if kind == "client-command" && (meta.contains('|') || name == "gexec") {
        "shell-escape"
    } else {
        kind
    };
    Stmt {
        kind,
        unbounded: false,
        objects: Vec::new(),
    }
}

fn always_true(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => matches!(&v.value, Value::Boolean(true)) || v.value.to_string() == "1",
        Expr::Nested(inner) => always_true(inner),
        Expr::BinaryOp { left, op, right } => {
            op.to_string() == "=" && left.to_string() == right.to_string()
        }
        _ => false,
    }
}

fn unbounded(selection: &Option<Expr>) -> bool {
    selection.as_ref().is_none_or(always_true)
}

/// The kind of the statement a query really is: a data-changing statement
/// inside a CTE (`WITH d AS (DELETE …) SELECT …`), a nested query or a set
/// operation counts, and `SELECT … INTO t` creates a table.
fn query_kind(q: &Query) -> Option<Stmt> {
    if let Some(with) = &q.with {
        for cte in &with.cte_tables {
            if let Some(k) = query_kind(&cte.query) {
                return Some(k);
            }
        }
    }
    set_kind(&q.body)
}

fn set_kind(body: &SetExpr) -> Option<Stmt> {
    match body {
        SetExpr::Insert(st) | SetExpr::Update(st) | SetExpr::Delete(st) | SetExpr::Merge(st) => {
            Some(reduce(st))
        }
        SetExpr::Query(q) => query_kind(q),
        SetExpr::SetOperation { left, right, .. } => set_kind(left).or_else(|| set_kind(right)),
        SetExpr::Select(sel) if sel.into.is_some() => Some(Stmt {
            kind: "create",
            unbounded: false,
            objects: Vec::new(),
        }),
        _ => None,
    }
}

fn reduce(s: &Statement) -> Stmt {
    let mut objects = Vec::new();
    let (kind, unb) = match s {
        Statement::Query(q) => {
            if let Some(inner) = query_kind(q) {
                return inner;
            }
            (
                if has_side_effects(&q.to_string()) {
                    "call"
                } else {
                    "select"
                },
                false,
            )
        }
        Statement::Explain {
            statement, analyze, ..
        } => {
            let inner = reduce(statement);
            objects = inner.objects;
            (
                if !*analyze || inner.kind == "select" {
                    "explain"
                } else {
                    inner.kind
                },
                inner.unbounded,
            )
        }
        Statement::Insert(i) => {
            objects.push(i.table.to_string());
            ("insert", false)
        }
        Statement::Update(u) => {
            objects.push(u.table.relation.to_string());
            ("update", unbounded(&u.selection))
        }
        Statement::Delete(d) => {
            let from = match &d.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            objects.extend(from.iter().map(|t| t.relation.to_string()));
            ("delete", unbounded(&d.selection))
        }
        Statement::Drop {
            object_type, names, ..
        } => {
            objects.extend(names.iter().map(|n| n.to_string()));
            let _ = matches!(object_type, ObjectType::Table);
            ("drop", false)
        }
        Statement::Truncate(t) => {
            objects.extend(t.table_names.iter().map(|n| n.name.to_string()));
            ("truncate", false)
        }
        Statement::AlterTable(a) => {
            objects.push(a.name.to_string());
            let drops = a.operations.iter().any(|op| {
                matches!(
                    op,
                    AlterTableOperation::DropColumn { .. }
                        | AlterTableOperation::DropConstraint { .. }
                        | AlterTableOperation::DropPartitions { .. }
                        | AlterTableOperation::DropPrimaryKey { .. }
                        | AlterTableOperation::DropForeignKey { .. }
                        | AlterTableOperation::DropIndex { .. }
                ) || op.to_string().to_ascii_uppercase().starts_with("DROP")
            });
            (if drops { "alter-drop" } else { "alter" }, false)
        }
        Statement::Copy { target, .. } => {
            let t = target.to_string().to_ascii_uppercase();
            (
                if t.contains("PROGRAM") {
                    "copy-program"
                } else {
                    "copy"
                },
                false,
            )
        }
        other => {
            let shown = other.to_string();
            let first = shown
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            let kind = match first.as_str() {
                "SELECT" | "WITH" | "VALUES" | "TABLE" => "select",
                "SHOW" | "DESCRIBE" | "DESC" | "USE" => "show",
                "EXPLAIN" => {
                    if shown.to_ascii_uppercase().contains("ANALYZE") {
                        "other"
                    } else {
                        "explain"
                    }
                }
                "SET" | "RESET" => "set",
                "BEGIN" | "START" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" => {
                    "transaction"
                }
                "CREATE" => "create",
                "GRANT" => "grant",
                "REVOKE" => "revoke",
                "DROP" => "drop",
                "TRUNCATE" => "truncate",
                "DELETE" => "delete",
                "UPDATE" => "update",
                "MERGE" => "merge",
                "ALTER" => {
                    if shown.to_ascii_uppercase().contains(" DROP ") {
                        "alter-drop"
                    } else {
                        "alter"
                    }
                }
                _ => "other",
            };
            (kind, false)
        }
    };
    Stmt {
        kind,
        unbounded: unb,
        objects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(client: &str, sql: &str) -> Vec<(&'static str, bool)> {
        statements(client, sql)
            .unwrap()
            .into_iter()
            .map(|s| (s.kind, s.unbounded))
            .collect()
    }

    #[test]
    fn destructive_statements_are_recognised() {
        assert_eq!(kinds("psql", "DROP TABLE invoices"), vec![("drop", false)]);
        assert_eq!(kinds("psql", "delete from users"), vec![("delete", true)]);
        assert_eq!(
            kinds("psql", "DELETE FROM users WHERE 1=1"),
            vec![("delete", true)]
        );
        assert_eq!(
            kinds("psql", "DELETE FROM users WHERE id = 3"),
            vec![("delete", false)]
        );
        assert_eq!(kinds("mysql", "UPDATE t SET a = 1"), vec![("update", true)]);
        assert_eq!(kinds("psql", "TRUNCATE a, b"), vec![("truncate", false)]);
        assert_eq!(
            kinds("psql", "ALTER TABLE t DROP COLUMN c"),
            vec![("alter-drop", false)]
        );
        assert_eq!(
            kinds("psql", "SELECT 1; select * from t"),
            vec![("select", false), ("select", false)]
        );
    }

    #[test]
    fn client_escapes_are_recognised() {
        assert_eq!(kinds("psql", "\\! rm -rf /"), vec![("shell-escape", false)]);
        assert_eq!(kinds("psql", "\\dt"), vec![("show", false)]);
        assert_eq!(
            kinds("psql", "COPY t TO PROGRAM 'sh'"),
            vec![("copy-program", false)]
        );
    }

    #[test]
    fn statements_inside_queries_are_seen() {
        assert_eq!(
            kinds(
                "psql",
                "WITH d AS (DELETE FROM users RETURNING *) SELECT count(*) FROM d"
            ),
            vec![("delete", true)]
        );
        assert_eq!(
            kinds(
                "psql",
                "WITH u AS (UPDATE t SET a = 1 WHERE id = 2 RETURNING *) SELECT * FROM u"
            ),
            vec![("update", false)]
        );
        assert_eq!(
            kinds("psql", "SELECT * INTO backup FROM users"),
            vec![("create", false)]
        );
        assert_eq!(
            kinds(
                "psql",
                "SELECT query_to_xml('drop table users', true, true, '')"
            ),
            vec![("call", false)]
        );
        assert_eq!(
            kinds("sqlite3", "SELECT writefile('/etc/x', 'y')"),
            vec![("call", false)]
        );
        assert_eq!(
            kinds("sqlite3", "SELECT edit('x', 'vim')"),
            vec![("call", false)]
        );
        assert_eq!(
            kinds("psql", "WITH t AS (SELECT 1) SELECT * FROM t"),
            vec![("select", false)]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(statements("psql", "DROP TABLE (").is_err());
    }
}
