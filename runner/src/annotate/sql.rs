//! The SQL probe: the statements a database client would run (inline, from a
//! here-document, a here-string or a pipe the gate could read), with the
//! tables each touches and the destructive ones flagged.
//!
//! The shell walk already parsed the SQL (`holdpoint_shared::sql`) into
//! `sql` pseudo-invocations; this probe only reads them, so it spawns
//! nothing and runs inline.

use holdpoint_shared::annotation::{Annotation, Item, Severity};
use holdpoint_shared::shell::Invocation;

/// Statement kinds that destroy data or run code outside the database.
fn destructive(kind: &str, unbounded: bool) -> bool {
    matches!(
        kind,
        "drop" | "truncate" | "alter-drop" | "copy-program" | "shell-escape"
    ) || (unbounded && matches!(kind, "delete" | "update"))
}

/// One annotation per database client invocation that carries SQL.
pub(super) fn annotate(invs: &[Invocation]) -> Vec<Annotation> {
    // Group consecutive statements by the client they were given to.
    let mut groups: Vec<(String, Vec<&Invocation>)> = Vec::new();
    for inv in invs.iter().filter(|i| i.program == "sql") {
        let client = inv
            .via
            .last()
            .cloned()
            .unwrap_or_else(|| "a database client".into());
        match groups.last_mut() {
            Some((c, list)) if *c == client => list.push(inv),
            _ => groups.push((client, vec![inv])),
        }
    }
    groups
        .into_iter()
        .map(|(client, stmts)| {
            let mut items = Vec::new();
            let mut n_destructive = 0;
            for s in stmts {
                let kind = s.args.first().map(|w| w.text.as_str()).unwrap_or("other");
                let unbounded = s.args.iter().any(|w| w.text == "--no-where");
                let tables: Vec<String> = s
                    .args
                    .iter()
                    .skip(1)
                    .filter(|w| w.text != "--no-where")
                    .map(|w| w.text.clone())
                    .collect();
                let mut flags = Vec::new();
                if destructive(kind, unbounded) {
                    n_destructive += 1;
                    flags.push("destructive".to_string());
                }
                if unbounded {
                    flags.push("no WHERE".to_string());
                }
                items.push(Item {
                    id: kind.to_uppercase(),
                    text: tables.join(", "),
                    details: Vec::new(),
                    flags,
                });
            }
            let mut a = Annotation::new(
                "sql",
                if n_destructive > 0 {
                    Severity::Danger
                } else {
                    Severity::Info
                },
                format!(
                    "{client} runs {}, {n_destructive} destructive",
                    super::plural(items.len(), "statement", "statements")
                ),
            );
            a.items = items;
            a
        })
        .collect()
}
