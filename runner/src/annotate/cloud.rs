//! The cloud probe: for an `aws` command, the resource ids and names on the
//! command line, whether they look like production, the flags that remove
//! the safety nets (`--apply-immediately`, `--skip-final-snapshot`, …), and
//! for an ElastiCache or RDS size change, the current and the new instance
//! class as the CLI's describe call reports them.

use super::{Env, Probe, ProbeError, literal_args, run_bounded};
use holdpoint_shared::annotation::{Annotation, Item, Severity};
use holdpoint_shared::shell::Invocation;

/// Options whose values name a resource.
const ID_FLAGS: &[&str] = &[
    "--replication-group-id",
    "--cache-cluster-id",
    "--global-replication-group-id",
    "--db-instance-identifier",
    "--db-cluster-identifier",
    "--db-snapshot-identifier",
    "--global-cluster-identifier",
    "--instance-ids",
    "--instance-id",
    "--function-name",
    "--bucket",
    "--cluster",
    "--cluster-name",
    "--nodegroup-name",
    "--service",
    "--stack-name",
    "--table-name",
    "--queue-url",
    "--topic-arn",
    "--key-id",
    "--secret-id",
    "--vpc-id",
    "--group-id",
    "--snapshot-id",
    "--volume-id",
    "--image-id",
    "--repository-name",
    "--user-name",
    "--role-name",
    "--policy-arn",
    "--load-balancer-arn",
    "--target-group-arn",
    "--hosted-zone-id",
    "--domain-name",
    "--file-system-id",
    "--log-group-name",
];

/// Flags that take away a safety net.
const DANGEROUS_FLAGS: &[(&str, &str)] = &[
    (
        "--apply-immediately",
        "applies now instead of in the maintenance window",
    ),
    ("--skip-final-snapshot", "no final snapshot is kept"),
    (
        "--delete-automated-backups",
        "deletes the automated backups too",
    ),
    ("--no-deletion-protection", "turns deletion protection off"),
    ("--force", "forces the operation"),
    ("--recursive", "applies to every object under the prefix"),
    ("--delete", "deletes what the source lacks"),
    (
        "--force-delete-without-recovery",
        "deletes without a recovery window",
    ),
    ("--no-final-snapshot", "no final snapshot is kept"),
];

/// Options of `aws` itself that the describe call must repeat.
const GLOBAL_OPTS: &[&str] = &["--region", "--profile", "--endpoint-url"];

/// An `aws` command line, reduced.
#[derive(Debug, Clone, Default)]
struct AwsCall {
    service: String,
    operation: String,
    /// (flag, value) for every resource id.
    ids: Vec<(String, String)>,
    /// `s3://bucket/key` arguments.
    uris: Vec<String>,
    dangerous: Vec<(String, &'static str)>,
    global: Vec<String>,
    /// The new size: `--cache-node-type`, `--db-instance-class`, …
    new_class: Option<String>,
}

fn parse(inv: &Invocation) -> Option<AwsCall> {
    let args = literal_args(inv);
    let mut c = AwsCall::default();
    let mut pos = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a, None),
        };
        // The values that follow an option (`--instance-ids i-1 i-2`).
        let mut values = Vec::new();
        if let Some(v) = inline {
            values.push(v);
        } else if flag.starts_with("--") {
            while let Some(v) = args.get(i + 1).filter(|v| !v.starts_with("--")) {
                values.push(v.clone());
                i += 1;
                if flag != "--instance-ids" {
                    break;
                }
            }
        }
        if let Some((_, why)) = DANGEROUS_FLAGS.iter().find(|(f, _)| *f == flag) {
            c.dangerous.push((flag.to_string(), why));
        }
        if ID_FLAGS.contains(&flag) {
            for v in &values {
                c.ids.push((flag.to_string(), v.clone()));
            }
        } else if GLOBAL_OPTS.contains(&flag) {
            if let Some(v) = values.first() {
                c.global.push(flag.to_string());
                c.global.push(v.clone());
            }
        } else if matches!(
            flag,
            "--cache-node-type" | "--db-instance-class" | "--instance-type" | "--node-type"
        ) {
            c.new_class = values.first().cloned();
        } else if !flag.starts_with("--") {
            if flag.starts_with("s3://") {
                c.uris.push(flag.to_string());
            } else {
                pos.push(flag.to_string());
            }
        }
        i += 1;
    }
    let mut pos = pos.into_iter();
    c.service = pos.next()?;
    c.operation = pos.next().unwrap_or_default();
    let read_only = ["describe-", "list-", "get-", "ls", "wait", "help"];
    if read_only.iter().any(|p| c.operation.starts_with(p)) && c.dangerous.is_empty() {
        return None;
    }
    Some(c)
}

/// The probes for aws invocations.
pub(super) fn plan(invs: &[Invocation], _env: &Env) -> Vec<Probe> {
    invs.iter()
        .filter(|i| i.program == "aws")
        .filter_map(|i| {
            let call = parse(i)?;
            Some(Probe::new("cloud", i.display(), move |env| {
                probe(&call, env)
            }))
        })
        .collect()
}

/// Whether a resource name reads like production.
pub(super) fn looks_like_production(name: &str) -> bool {
    let l = name.to_lowercase();
    l.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| matches!(w, "prod" | "prd" | "production" | "live"))
}

/// Memory of common ElastiCache node types, in GiB, as AWS lists them.
fn cache_memory_gib(node_type: &str) -> Option<f64> {
    let gib = match node_type {
        "cache.t2.micro" => 0.555,
        "cache.t3.micro" | "cache.t4g.micro" => 0.5,
        "cache.t2.small" => 1.55,
        "cache.t3.small" | "cache.t4g.small" => 1.37,
        "cache.t2.medium" => 3.22,
        "cache.t3.medium" | "cache.t4g.medium" => 3.09,
        "cache.m5.large" | "cache.m6g.large" | "cache.m7g.large" => 6.38,
        "cache.m5.xlarge" | "cache.m6g.xlarge" | "cache.m7g.xlarge" => 12.93,
        "cache.m5.2xlarge" | "cache.m6g.2xlarge" | "cache.m7g.2xlarge" => 26.04,
        "cache.r5.large" | "cache.r6g.large" | "cache.r7g.large" => 13.07,
        "cache.r5.xlarge" | "cache.r6g.xlarge" | "cache.r7g.xlarge" => 26.32,
        "cache.r5.2xlarge" | "cache.r6g.2xlarge" | "cache.r7g.2xlarge" => 52.82,
        "cache.r5.4xlarge" | "cache.r6g.4xlarge" | "cache.r7g.4xlarge" => 105.81,
        _ => return None,
    };
    Some(gib)
}

fn with_memory(class: &str) -> String {
    match cache_memory_gib(class) {
        Some(g) => format!("{class} ({g} GiB)"),
        None => class.to_string(),
    }
}

/// Asks the CLI what the resource is now: (describe operation, id flag,
/// JSON list, field).
fn describe_for(c: &AwsCall) -> Option<(&'static str, &'static str, &'static str, &'static str)> {
    match (c.service.as_str(), c.operation.as_str()) {
        ("elasticache", "modify-replication-group") => Some((
            "describe-replication-groups",
            "--replication-group-id",
            "ReplicationGroups",
            "CacheNodeType",
        )),
        ("elasticache", "modify-cache-cluster") => Some((
            "describe-cache-clusters",
            "--cache-cluster-id",
            "CacheClusters",
            "CacheNodeType",
        )),
        ("rds", "modify-db-instance") => Some((
            "describe-db-instances",
            "--db-instance-identifier",
            "DBInstances",
            "DBInstanceClass",
        )),
        _ => None,
    }
}

fn probe(c: &AwsCall, env: &Env) -> Result<Vec<Annotation>, ProbeError> {
    let mut names: Vec<String> = c.ids.iter().map(|(_, v)| v.clone()).collect();
    names.extend(c.uris.iter().cloned());
    let prod: Vec<&String> = names.iter().filter(|n| looks_like_production(n)).collect();
    let profile_prod = c
        .global
        .chunks(2)
        .any(|kv| kv[0] == "--profile" && kv.get(1).is_some_and(|p| looks_like_production(p)));
    let what = format!("{} {}", c.service, c.operation);
    let target = if names.is_empty() {
        "resources".to_string()
    } else {
        names.join(", ")
    };
    let mut title = format!("{what} on {target}");
    if !prod.is_empty() || profile_prod {
        title.push_str(" (looks like production)");
    }
    let mut a = Annotation::new(
        "cloud",
        if prod.is_empty() && !profile_prod && c.dangerous.is_empty() {
            Severity::Warning
        } else {
            Severity::Danger
        },
        String::new(),
    );
    a.fact("operation", &what);
    for (flag, id) in &c.ids {
        a.items.push(Item {
            id: id.clone(),
            text: flag.trim_start_matches("--").to_string(),
            details: Vec::new(),
            flags: if looks_like_production(id) {
                vec!["production".into()]
            } else {
                Vec::new()
            },
        });
    }
    for u in &c.uris {
        a.items.push(Item {
            id: u.clone(),
            text: "s3 location".into(),
            details: Vec::new(),
            flags: if looks_like_production(u) {
                vec!["production".into()]
            } else {
                Vec::new()
            },
        });
    }
    if profile_prod {
        a.fact("profile", "the AWS profile looks like production");
    }
    if !c.dangerous.is_empty() {
        a.fact(
            "dangerous flags",
            c.dangerous
                .iter()
                .map(|(f, why)| format!("{f} ({why})"))
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    if let Some(new) = &c.new_class {
        let mut size = format!("to {}", with_memory(new));
        if let Some((op, id_flag, list, field)) = describe_for(c)
            && let Some((_, id)) = c.ids.iter().find(|(f, _)| f == id_flag)
        {
            let mut cmd = env.command("aws");
            cmd.args(&c.global)
                .args([&c.service, op, id_flag, id, "--output", "json"]);
            match run_bounded(cmd, env).and_then(|r| r.ok("aws")) {
                Ok(json) => {
                    let current = serde_json::from_str::<serde_json::Value>(&json)
                        .ok()
                        .and_then(|v| {
                            v.get(list)?
                                .get(0)?
                                .get(field)?
                                .as_str()
                                .map(str::to_string)
                        });
                    match current {
                        Some(cur) => {
                            size = format!("from {} to {}", with_memory(&cur), with_memory(new));
                            if let (Some(old), Some(new)) =
                                (cache_memory_gib(&cur), cache_memory_gib(new))
                                && new < old
                            {
                                a.fact(
                                    "shrinks",
                                    format!("memory falls from {old} GiB to {new} GiB; what does not fit is evicted"),
                                );
                                a.severity = Severity::Danger;
                            }
                        }
                        None => {
                            a.error =
                                Some(format!("`aws {} {op}` answered without {field}", c.service))
                        }
                    }
                }
                Err(e) => a.error = Some(format!("could not read the current size: {e}")),
            }
        }
        a.fact("size change", &size);
        title.push_str(&format!(": size {size}"));
    }
    if c.dangerous.iter().any(|(f, _)| f == "--apply-immediately") {
        title.push_str(", applied immediately");
    }
    a.title = title;
    Ok(vec![a])
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdpoint_shared::shell::Word;

    fn inv(line: &str) -> Invocation {
        Invocation {
            program: "aws".into(),
            args: line.split_whitespace().map(Word::lit).collect(),
            env: Vec::new(),
            cwd: None,
            via: Vec::new(),
        }
    }

    #[test]
    fn ids_and_dangerous_flags_are_read_from_the_line() {
        let c = parse(&inv(
            "ec2 terminate-instances --instance-ids i-0abc i-0def --region eu-west-1",
        ))
        .unwrap();
        assert_eq!(
            c.ids,
            vec![
                ("--instance-ids".to_string(), "i-0abc".to_string()),
                ("--instance-ids".to_string(), "i-0def".to_string())
            ]
        );
        assert_eq!(c.global, vec!["--region", "eu-west-1"]);
        let c = parse(&inv(
            "rds delete-db-instance --db-instance-identifier=prod-db --skip-final-snapshot",
        ))
        .unwrap();
        assert_eq!(c.ids[0].1, "prod-db");
        assert_eq!(c.dangerous[0].0, "--skip-final-snapshot");
        let c = parse(&inv("s3 rm s3://prod-assets/img --recursive")).unwrap();
        assert_eq!(c.uris, vec!["s3://prod-assets/img"]);
        assert!(parse(&inv("ec2 describe-instances")).is_none());
    }
}
