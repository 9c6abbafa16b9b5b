//! The kubernetes probe: for a mutating `kubectl` command, the context and
//! namespaces in effect, the kinds and names it touches, and what
//! `--all-namespaces` means here (the namespaces `kubectl get ns` lists).
//!
//! The context comes from `--context`, then the `current-context` of the
//! kubeconfig (`--kubeconfig`, then `KUBECONFIG`, then `~/.kube/config`),
//! read with a small line parser: only `current-context` and the
//! `contexts` list are needed.

use super::{Env, Probe, ProbeError, inv_cwd, literal_args, plural, run_bounded};
use holdpoint_shared::annotation::{Annotation, Item, Severity};
use holdpoint_shared::shell::Invocation;

/// kubectl verbs that change the cluster.
const MUTATING: &[&str] = &[
    "apply",
    "create",
    "delete",
    "replace",
    "patch",
    "edit",
    "set",
    "rollout",
    "scale",
    "autoscale",
    "label",
    "annotate",
    "drain",
    "cordon",
    "uncordon",
    "taint",
    "expose",
    "run",
];

/// Global and common options that take a value.
const VALUE_OPTS: &[&str] = &[
    "-n",
    "--namespace",
    "--context",
    "--kubeconfig",
    "--cluster",
    "--user",
    "-f",
    "--filename",
    "-l",
    "--selector",
    "-o",
    "--output",
    "--replicas",
    "--field-selector",
    "-c",
    "--container",
    "--type",
    "-p",
    "--patch",
    "--server",
    "-s",
    "--token",
    "--as",
    "--as-group",
    "--timeout",
    "--grace-period",
    "-k",
    "--kustomize",
    "--to-revision",
    "--current-replicas",
];

/// What a kubectl command line says.
#[derive(Debug, Default, Clone)]
struct KubeCall {
    verb: String,
    /// `rollout restart`, `set image`: the sub-verb.
    sub: Option<String>,
    context: Option<String>,
    namespace: Option<String>,
    kubeconfig: Option<String>,
    all_namespaces: bool,
    objects: Vec<String>,
    files: Vec<String>,
    /// `set image`/`set env` assignments, `scale --replicas`, …
    changes: Vec<String>,
}

fn parse(inv: &Invocation) -> Option<KubeCall> {
    let args = literal_args(inv);
    let mut k = KubeCall::default();
    let mut pos: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_string())),
            _ => (a, None),
        };
        let value = |i: &mut usize| -> Option<String> {
            match &inline {
                Some(v) => Some(v.clone()),
                None => {
                    *i += 1;
                    args.get(*i).cloned()
                }
            }
        };
        match flag {
            "-A" | "--all-namespaces" => k.all_namespaces = inline.as_deref() != Some("false"),
            "-n" | "--namespace" => k.namespace = value(&mut i),
            "--context" => k.context = value(&mut i),
            "--kubeconfig" => k.kubeconfig = value(&mut i),
            "-f" | "--filename" | "-k" | "--kustomize" => {
                if let Some(v) = value(&mut i) {
                    k.files.push(v);
                }
            }
            "--replicas" | "--image" | "--to-revision" => {
                if let Some(v) = value(&mut i) {
                    k.changes.push(format!("{flag}={v}"));
                }
            }
            _ if VALUE_OPTS.contains(&flag) => {
                value(&mut i);
            }
            _ if a.starts_with('-') => {
                if let Some(ns) = a.strip_prefix("-n").filter(|v| !v.is_empty()) {
                    k.namespace = Some(ns.to_string());
                }
            }
            _ => pos.push(a.to_string()),
        }
        i += 1;
    }
    let mut pos = pos.into_iter();
    k.verb = pos.next()?;
    if !MUTATING.contains(&k.verb.as_str()) {
        return None;
    }
    if matches!(k.verb.as_str(), "rollout" | "set" | "create") {
        k.sub = pos.next();
    }
    let rest: Vec<String> = pos.collect();
    // `set image deployment/x c=img`, `set env …`: assignments are changes.
    let (changes, objects): (Vec<String>, Vec<String>) =
        rest.into_iter().partition(|w| w.contains('='));
    k.changes.extend(changes);
    // `delete deployment a b` → deployment/a, deployment/b.
    let mut objs = Vec::new();
    let mut kind: Option<String> = None;
    for o in objects {
        if o.contains('/') {
            objs.push(o);
        } else if let Some(kd) = &kind {
            objs.push(format!("{kd}/{o}"));
        } else if k.verb != "run" {
            kind = Some(o);
        } else {
            objs.push(format!("pod/{o}"));
        }
    }
    if objs.is_empty()
        && let Some(kd) = kind
    {
        objs.push(format!("{kd} (every object of this kind)"));
    }
    k.objects = objs;
    Some(k)
}

/// The probes for mutating kubectl invocations.
pub(super) fn plan(invs: &[Invocation], env: &Env) -> Vec<Probe> {
    invs.iter()
        .filter(|i| i.program == "kubectl" || i.program == "oc")
        .filter_map(|i| {
            let call = parse(i)?;
            let cwd = inv_cwd(i, env);
            let program = i.program.clone();
            Some(Probe::new("kubernetes", i.display(), move |env| {
                probe(&program, &call, cwd.as_deref(), env)
            }))
        })
        .collect()
}

/// What the kubeconfig says about the context in effect.
#[derive(Debug, Default, PartialEq, Eq)]
struct KubeConfig {
    current_context: Option<String>,
    /// (context name, cluster, namespace)
    contexts: Vec<(String, Option<String>, Option<String>)>,
}

/// Reads `current-context` and the `contexts` list from kubeconfig YAML.
/// Only the block style that kubectl itself writes is understood.
fn parse_kubeconfig(text: &str) -> KubeConfig {
    let mut cfg = KubeConfig::default();
    let mut in_contexts = false;
    let mut item_indent: Option<usize> = None;
    let mut cur: Option<(String, Option<String>, Option<String>)> = None;
    let unquote = |v: &str| v.trim().trim_matches(['"', '\'']).to_string();
    for line in text.lines() {
        let body = line.trim_end();
        if body.trim().is_empty() || body.trim_start().starts_with('#') {
            continue;
        }
        let indent = body.len() - body.trim_start().len();
        let t = body.trim_start();
        if indent == 0 && !t.starts_with("- ") {
            if let Some(c) = cur.take() {
                cfg.contexts.push(c);
            }
            in_contexts = t.starts_with("contexts:");
            item_indent = None;
            if let Some(v) = t.strip_prefix("current-context:") {
                let v = unquote(v);
                cfg.current_context = (!v.is_empty()).then_some(v);
            }
            continue;
        }
        if !in_contexts {
            continue;
        }
        let t = if let Some(rest) = t.strip_prefix("- ") {
            if item_indent.is_none() || item_indent == Some(indent) {
                item_indent = Some(indent);
                if let Some(c) = cur.take() {
                    cfg.contexts.push(c);
                }
                cur = Some((String::new(), None, None));
            }
            rest.trim_start()
        } else {
            t
        };
        let Some(c) = cur.as_mut() else { continue };
        if let Some(v) = t.strip_prefix("name:") {
            c.0 = unquote(v);
        } else if let Some(v) = t.strip_prefix("namespace:") {
            c.2 = Some(unquote(v));
        } else if let Some(v) = t.strip_prefix("cluster:") {
            c.1 = Some(unquote(v)).filter(|v| !v.is_empty());
        }
    }
    if let Some(c) = cur.take() {
        cfg.contexts.push(c);
    }
    cfg
}

fn looks_like_production(name: &str) -> bool {
    let l = name.to_lowercase();
    l.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| matches!(w, "prod" | "prd" | "production" | "live"))
}

fn probe(
    program: &str,
    call: &KubeCall,
    cwd: Option<&str>,
    env: &Env,
) -> Result<Vec<Annotation>, ProbeError> {
    let kubeconfig_path = call
        .kubeconfig
        .clone()
        .map(|p| {
            if p.starts_with('/') {
                p
            } else {
                format!("{}/{p}", cwd.unwrap_or("."))
            }
        })
        .or_else(|| {
            env.vars
                .get("KUBECONFIG")
                .and_then(|k| k.split(':').find(|p| !p.is_empty()).map(str::to_string))
        })
        .unwrap_or_else(|| format!("{}/.kube/config", env.home));
    let cfg = std::fs::read_to_string(&kubeconfig_path)
        .map(|t| parse_kubeconfig(&t))
        .unwrap_or_default();
    let context = call.context.clone().or(cfg.current_context.clone());
    let entry = context
        .as_ref()
        .and_then(|c| cfg.contexts.iter().find(|(n, _, _)| n == c));
    let namespace = if call.all_namespaces {
        None
    } else {
        Some(
            call.namespace
                .clone()
                .or_else(|| entry.and_then(|e| e.2.clone()))
                .unwrap_or_else(|| "default".into()),
        )
    };
    let what = match &call.sub {
        Some(s) => format!("{} {s}", call.verb),
        None => call.verb.clone(),
    };
    let objects = if call.objects.is_empty() && !call.files.is_empty() {
        format!("the objects in {}", call.files.join(", "))
    } else if call.objects.is_empty() {
        "objects".to_string()
    } else {
        call.objects.join(", ")
    };
    let ctx_name = context.clone().unwrap_or_else(|| "(none)".into());
    let prod = context.as_deref().is_some_and(looks_like_production)
        || namespace.as_deref().is_some_and(looks_like_production)
        || entry
            .and_then(|e| e.1.as_deref())
            .is_some_and(looks_like_production);

    let mut a = Annotation::new("kubernetes", Severity::Warning, String::new());
    a.fact(
        "context",
        format!(
            "{ctx_name} (from {})",
            if call.context.is_some() {
                "--context".to_string()
            } else {
                kubeconfig_path.clone()
            }
        ),
    );
    if let Some(cluster) = entry.and_then(|e| e.1.clone()) {
        a.fact("cluster", cluster);
    }
    a.fact("action", what.clone());
    for o in &call.objects {
        a.items.push(Item {
            id: o.clone(),
            text: what.clone(),
            details: namespace.iter().cloned().collect(),
            flags: Vec::new(),
        });
    }
    if !call.changes.is_empty() {
        a.fact("changes", call.changes.join(" "));
    }
    if prod {
        a.fact(
            "production",
            "the context, cluster or namespace looks like production",
        );
    }
    match &namespace {
        Some(ns) => {
            a.title = format!("{what} {objects} in namespace {ns} on context {ctx_name}");
            a.fact("namespace", ns);
            if prod || call.verb == "delete" || call.verb == "drain" {
                a.severity = Severity::Danger;
            }
        }
        None => {
            a.severity = Severity::Danger;
            let mut cmd = env.command(program);
            if let Some(c) = &call.context {
                cmd.arg("--context").arg(c);
            }
            if let Some(k) = &call.kubeconfig {
                cmd.arg("--kubeconfig").arg(k);
            }
            cmd.args(["get", "namespaces", "-o", "name", "--request-timeout=2s"]);
            match run_bounded(cmd, env).and_then(|r| r.ok(program)) {
                Ok(out) => {
                    let names: Vec<String> = out
                        .lines()
                        .map(|l| l.trim().trim_start_matches("namespace/").to_string())
                        .filter(|l| !l.is_empty())
                        .collect();
                    a.title = format!(
                        "{what} {objects} in every namespace ({}) on context {ctx_name}: no canary, all at once",
                        plural(names.len(), "namespace", "namespaces")
                    );
                    a.fact(
                        "namespaces",
                        format!("all {}: {}", names.len(), names.join(", ")),
                    );
                    a.truncated |= names.len() > env.opts.max_items;
                }
                Err(e) => {
                    a.title = format!(
                        "{what} {objects} in every namespace on context {ctx_name}: no canary, all at once"
                    );
                    a.error = Some(format!("could not list the namespaces: {e}"));
                }
            }
        }
    }
    Ok(vec![a])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_current_context_and_namespace_are_read() {
        let cfg = parse_kubeconfig(
            "apiVersion: v1\nclusters:\n- cluster:\n    server: https://k\n  name: prod-eu\ncontexts:\n- context:\n    cluster: prod-eu\n    namespace: api\n    user: deployer\n  name: prod-eu-admin\n- name: dev\n  context:\n    cluster: dev\ncurrent-context: \"prod-eu-admin\"\nkind: Config\n",
        );
        assert_eq!(cfg.current_context.as_deref(), Some("prod-eu-admin"));
        assert_eq!(
            cfg.contexts,
            vec![
                (
                    "prod-eu-admin".into(),
                    Some("prod-eu".into()),
                    Some("api".into())
                ),
                ("dev".into(), Some("dev".into()), None)
            ]
        );
    }

    #[test]
    fn read_only_verbs_are_not_probed() {
        use holdpoint_shared::shell::Word;
        let inv = |args: &[&str]| Invocation {
            program: "kubectl".into(),
            args: args.iter().map(|a| Word::lit(*a)).collect(),
            env: Vec::new(),
            cwd: None,
            via: Vec::new(),
        };
        assert!(parse(&inv(&["get", "pods", "-A"])).is_none());
        let k = parse(&inv(&[
            "rollout",
            "restart",
            "deployment/api-server",
            "--all-namespaces",
        ]))
        .unwrap();
        assert_eq!(
            (k.sub.as_deref(), k.objects.clone(), k.all_namespaces),
            (
                Some("restart"),
                vec!["deployment/api-server".to_string()],
                true
            )
        );
        let k = parse(&inv(&["-n", "prod", "delete", "deployment", "a", "b"])).unwrap();
        assert_eq!(k.objects, vec!["deployment/a", "deployment/b"]);
        assert_eq!(k.namespace.as_deref(), Some("prod"));
    }
}
