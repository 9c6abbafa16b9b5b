//! End-to-end tests of the `holdpoint` binary's front ends: what an agent,
//! a user at a terminal and a hook host see.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_holdpoint");

/// A scratch home and project directory, removed on drop.
struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let root = std::env::temp_dir().join(format!("holdpoint-fe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("home/.config")).unwrap();
        std::fs::create_dir_all(root.join("project")).unwrap();
        Sandbox { root }
    }
    fn home(&self) -> PathBuf {
        self.root.join("home")
    }
    fn project(&self) -> PathBuf {
        self.root.join("project")
    }
    /// A command running the binary in the project with a clean environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.project())
            .env_clear()
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TMPDIR", "/tmp");
        c
    }
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The binary may stop reading early (oversized input): that is not an error here.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn exists(p: &Path) -> bool {
    p.exists()
}

#[test]
fn check_reads_lines_and_writes_one_json_object_per_line() {
    let sb = Sandbox::new("check-json");
    let out = sb.run(
        &["check"],
        "git status\ngit push origin main --force\n\ncat ~/.ssh/id_rsa\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["command"], "git status");
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[1]["decision"], "review");
    assert_eq!(lines[1]["risk"], "high");
    assert_eq!(lines[1]["rules"][0], "git.push.force");
    assert!(
        lines[1]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("overwrites")
    );
    assert_eq!(lines[2]["decision"], "deny");
}

#[test]
fn check_explain_shows_which_part_hit_which_rule() {
    let sb = Sandbox::new("explain");
    let out = sb.run(
        &[
            "check",
            "--explain",
            "ls -la && rm -rf /var/backups/x.sql.gz",
        ],
        "",
    );
    let s = text(&out.stdout);
    assert!(s.contains("decision: review (critical risk)"), "{s}");
    assert!(s.contains("files.delete.backup"), "{s}");
    assert!(s.contains("on:  rm -rf /var/backups/x.sql.gz"), "{s}");
    assert!(s.contains("files.read"), "{s}");
    assert!(s.contains("on:  ls -la"), "{s}");
}

#[test]
fn exec_runs_an_allowed_command_with_its_output_and_exit_code() {
    let sb = Sandbox::new("exec-ok");
    let out = sb.run(&["exec", "--", "echo", "hello world"], "");
    assert_eq!(text(&out.stdout), "hello world\n");
    assert!(out.status.success());
    let out = sb.run(&["exec", "--", "ls", "does-not-exist"], "");
    assert_eq!(
        out.status.code(),
        Some(2),
        "ls's own exit code passes through"
    );
}

#[test]
fn exec_refuses_a_denied_command_with_the_reason_and_never_runs_it() {
    let sb = Sandbox::new("exec-deny");
    let marker = sb.project().join("ran");
    let script = format!("touch {} ; cat ~/.ssh/id_rsa", marker.display());
    let out = sb.run(&["exec", "--", "sh", "-c", &script], "");
    assert_eq!(out.status.code(), Some(126));
    let err = text(&out.stderr);
    assert!(err.contains("denied"), "{err}");
    assert!(err.contains("secrets.file.read"), "{err}");
    assert!(!exists(&marker), "a denied command ran");
}

#[test]
fn force_push_is_refused_until_a_bot_exists_and_never_runs() {
    let sb = Sandbox::new("sh-review");
    let marker = sb.project().join("ran");
    let script = format!("touch {} && git push origin main --force", marker.display());
    let out = sb.run(&["sh", "-c", &script], "");
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(err.contains("needs a human's approval"), "{err}");
    assert!(err.contains("no approval bot is configured"), "{err}");
    assert!(err.contains("git.push.force"), "{err}");
    assert!(!exists(&marker));
}

#[test]
fn sh_runs_allowed_scripts_with_positional_arguments_and_exit_codes() {
    let sb = Sandbox::new("sh-ok");
    let out = sb.run(
        &["sh", "-c", "echo \"$1-$2\"; exit 7", "name", "a", "b"],
        "",
    );
    assert_eq!(text(&out.stdout), "a-b\n");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn holdpoint_works_as_an_agents_shell() {
    let sb = Sandbox::new("as-shell");
    // An agent with SHELL=holdpoint runs `$SHELL -c CMD` or `$SHELL -lc CMD`.
    let out = sb.run(&["-c", "pwd && echo ok"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with("ok\n"));
    let out = sb.run(&["-lc", "rm -rf ~"], "");
    assert_eq!(out.status.code(), Some(126));
    assert!(sb.home().exists());
    let out = sb.run(&["sh"], "");
    assert_eq!(
        out.status.code(),
        Some(125),
        "an interactive shell is refused"
    );
}

#[test]
fn a_signal_that_kills_the_command_reaches_the_caller() {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::new("signal");
    let mut child = sb
        .cmd(&["sh", "-c", "sleep 30"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // holdpoint replaced itself with the shell: the pid is the command's.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(15));
}

fn hook(sb: &Sandbox, input: &str) -> (Option<i32>, String, String) {
    let out = sb.run(&["hook", "claude-code"], input);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn claude_code_hook_allows_harmless_and_denies_risky_commands() {
    let sb = Sandbox::new("hook");
    let cwd = sb.project();
    let input = serde_json::json!({
        "session_id": "s1", "tool_name": "Bash", "cwd": cwd,
        "tool_input": {"command": "cargo test -p core"}
    });
    let (code, out, _) = hook(&sb, &input.to_string());
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hookSpecificOutput"]["hookEventName"], "PreToolUse");
    assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "allow");

    let input = serde_json::json!({
        "session_id": "s1", "tool_name": "Bash", "cwd": cwd,
        "tool_input": {"command": "git reset --hard HEAD~12"}
    });
    let (code, out, _) = hook(&sb, &input.to_string());
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "deny");
    let reason = v["hookSpecificOutput"]["permissionDecisionReason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("git.reset.hard"), "{reason}");
}

#[test]
fn claude_code_hook_passes_other_tools_through_untouched() {
    let sb = Sandbox::new("hook-other");
    let input = r#"{"session_id":"s","tool_name":"Read","tool_input":{"file_path":"/etc/shadow"}}"#;
    let (code, out, _) = hook(&sb, input);
    assert_eq!(code, Some(0));
    assert_eq!(out, "");
}

#[test]
fn claude_code_hook_refuses_malformed_input() {
    let sb = Sandbox::new("hook-bad");
    for input in [
        "",
        "{not json",
        r#"{"tool_name":"Bash","tool_input":{"command":123}}"#,
        r#"{"tool_name":"Bash","tool_input":{}}"#,
        r#"{"tool_input":{"command":"ls"}}"#,
    ] {
        let (code, out, err) = hook(&sb, input);
        assert_eq!(code, Some(2), "input {input:?} was not refused");
        assert!(!out.contains("\"allow\""), "{out}");
        assert!(err.contains("refusing"), "{err}");
    }
    let huge = format!(
        r#"{{"tool_name":"Bash","tool_input":{{"command":"echo {}"}}}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let (code, _, err) = hook(&sb, &huge);
    assert_eq!(code, Some(2));
    assert!(err.contains("larger than"), "{err}");
}

#[test]
fn a_user_policy_replaces_a_builtin_rule_by_id_and_adds_its_own() {
    let sb = Sandbox::new("user-policy");
    let dir = sb.home().join(".config/holdpoint");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        r#"
[[rule]]
id = "cloud.terraform.apply"
decision = "allow"
risk = "low"
reason = "our sandbox account: applies are routine"
program = ["terraform"]
subcommand = ["apply"]
examples.match = ["terraform apply"]

# Allow rules are closed-world: the toolbox must know `apply`'s words.
[tool.terraform.sub.apply]
options = { "-auto-approve" = "flag" }

[[rule]]
id = "team.no-friday-deploys"
decision = "deny"
risk = "high"
reason = "no deploys from agents"
program = ["make"]
subcommand = ["deploy"]
examples.match = ["make deploy"]
examples.no_match = ["make test"]

[[rule]]
id = "team.loosen-force-push"
decision = "allow"
risk = "low"
reason = "tries to allow force pushes without replacing the built-in rule"
program = ["git"]
subcommand = ["push"]
"#,
    )
    .unwrap();
    let out = sb.run(
        &["check"],
        "terraform apply\nmake deploy\ngit push --force\n",
    );
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["decision"], "allow", "{}", text(&out.stderr));
    assert_eq!(lines[1]["decision"], "deny");
    assert_eq!(lines[1]["rules"][0], "team.no-friday-deploys");
    // Strictest wins: a new allow rule cannot loosen a built-in review.
    assert_eq!(lines[2]["decision"], "review");
    let shown = sb.run(&["policy", "show"], "");
    let doc: toml::Table = toml::from_str(&text(&shown.stdout)).unwrap();
    let ids: Vec<&str> = doc["rule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"team.no-friday-deploys"));
    assert!(ids.contains(&"git.push.force"));
}

#[test]
fn a_policy_whose_example_fails_does_not_load_and_nothing_runs() {
    let sb = Sandbox::new("bad-example");
    let file = sb.root.join("policy.toml");
    std::fs::write(
        &file,
        r#"
[[rule]]
id = "team.echo"
decision = "deny"
risk = "low"
reason = "x"
program = ["echo"]
examples.match = ["printf hi"]
"#,
    )
    .unwrap();
    let out = sb.run(&["policy", "test", file.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("rule `team.echo` should match `printf hi`"),
        "{err}"
    );

    let marker = sb.project().join("ran");
    let mut c = sb.cmd(&["exec", "--", "touch", marker.to_str().unwrap()]);
    let out = c.env("HOLDPOINT_POLICY", &file).output().unwrap();
    assert_eq!(out.status.code(), Some(124));
    assert!(text(&out.stderr).contains("refusing to run anything"));
    assert!(!exists(&marker));
}

#[test]
fn unknown_fields_and_bad_toml_are_clear_errors() {
    let sb = Sandbox::new("bad-toml");
    let file = sb.root.join("policy.toml");
    std::fs::write(
        &file,
        "[[rule]]\nid = \"x\"\ndecision = \"allow\"\nrisk = \"low\"\nreason = \"r\"\nprogram = [\"ls\"]\nany_flagz = [\"-l\"]\n",
    )
    .unwrap();
    let out = sb.run(&["check", "--policy", file.to_str().unwrap(), "ls"], "");
    assert_eq!(out.status.code(), Some(124));
    let err = text(&out.stderr);
    assert!(err.contains("any_flagz"), "{err}");
    let mut c = sb.cmd(&["check", "ls"]);
    let out = c
        .env("HOLDPOINT_POLICY", sb.root.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124));
    assert!(text(&out.stderr).contains("cannot read policy file"));
}

#[test]
fn the_builtin_policy_passes_its_own_examples() {
    let sb = Sandbox::new("policy-test");
    let out = sb.run(&["policy", "test"], "");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).starts_with("ok: "));
}

#[test]
fn the_probe_deadline_comes_from_the_environment() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new("probe-deadline");
    let bin = sb.root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let stub = bin.join("kubectl");
    std::fs::write(&stub, "#!/bin/sh\nsleep 30\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = sb
        .cmd(&[
            "check",
            "--annotate",
            "kubectl rollout restart deployment/api -A",
        ])
        .env("PATH", path)
        .env("HOLDPOINT_PROBE_TIMEOUT_MS", "300")
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert!(
        s.contains("did not answer within 300 ms and was stopped"),
        "{s}"
    );
}

/// The decisions `check` prints for the lines of `stdin`, one a line.
fn decisions(out: &Output) -> Vec<(String, Vec<String>)> {
    text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let rules = v["rules"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (v["decision"].as_str().unwrap_or("").to_string(), rules)
        })
        .collect()
}

#[test]
fn in_project_cleanup_runs_at_once_and_a_link_out_of_the_tree_holds_it() {
    // A project outside the temp directories, so that the clean-up rules,
    // not the temp-directory allowance, decide.
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("holdpoint-cleanup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let project = root.join("project");
    std::fs::create_dir_all(project.join(".git")).unwrap();
    std::fs::create_dir_all(project.join("target/debug")).unwrap();
    std::fs::create_dir_all(project.join("node_modules/pkg")).unwrap();
    std::fs::create_dir_all(root.join("backups")).unwrap();
    std::os::unix::fs::symlink(root.join("backups"), project.join("build")).unwrap();
    let sb = Sandbox::new("cleanup");
    let cwd = project.to_str().unwrap();
    let out = sb.run(
        &["check", "--cwd", cwd],
        "rm -rf target node_modules\n\
         rm -rf build/*\n\
         rm -f build/old.log\n\
         find build -name '*.pyc' -delete\n\
         find . -name '*.pyc' -delete\n\
         rm -rf .git\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let d = decisions(&out);
    assert_eq!(d.len(), 6, "{d:?}");
    assert_eq!(d[0].0, "allow", "{d:?}");
    for held in &d[1..4] {
        assert_eq!(held.0, "review", "{d:?}");
        assert!(
            held.1.iter().any(|r| r == "files.delete.through-link"),
            "{d:?}"
        );
    }
    assert_eq!(d[4].0, "allow", "{d:?}");
    assert_eq!(d[5].0, "review", "{d:?}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn check_stats_counts_the_decisions_and_what_holds() {
    let sb = Sandbox::new("stats");
    let file = sb.root.join("commands.txt");
    std::fs::write(
        &file,
        "# what an agent ran\nls -la\ngit status\nsafe\tgit log --oneline\nrisky\tgit push --force\n\
         frobnicate --all\nfrobnicate --again\nkafka-topics --bootstrap-server k:9092 --delete --topic x\n\
         cat ~/.ssh/id_rsa\n\n",
    )
    .unwrap();
    let out = sb.run(&["check", "--stats", file.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("commands: 8"), "{s}");
    assert!(s.contains("allowed:       3  37.5%"), "{s}");
    assert!(s.contains("reviewed:      4  50.0%"), "{s}");
    assert!(s.contains("denied:        1  12.5%"), "{s}");
    assert!(s.contains("rules that hold most:"), "{s}");
    assert!(s.contains("git.push.force"), "{s}");
    assert!(s.contains("unknown programs that hold most:"), "{s}");
    assert!(s.contains("       2  frobnicate"), "{s}");
    // A file that is not there is an error, not an empty report.
    let out = sb.run(&["check", "--stats", "/nonexistent/commands.txt"], "");
    assert!(!out.status.success());
}
