//! Closed-world allow rules, through a user policy: an allow rule lets a
//! command run only when the program's toolbox entry accounts for every
//! word, and the reviewer is told which word was not understood.

use holdpoint_shared::{Context, Decision, Policy, PolicyFile, Verdict};

const USER: &str = r#"
[tool.mytool]
options = { "-v" = "flag", "--verbose" = "flag", "-n" = "number", "--count" = "number",
            "-o" = "write", "--output" = "write", "--format" = "enum:json|text",
            "--color" = "?enum:always|never|auto", "--exec" = "code",
            "--url" = "url", "-c" = "match:color.*=*|user.name=*" }
args = ["read..."]

[tool.mytool.sub.list]
options = { "--all" = "flag" }
args = ["text..."]

[tool.mytool.sub."describe-*"]
options = { "--id" = "text" }

[tool.mytool.sub.run]
tool = "helper"

[tool.helper]
options = { "-q" = "flag" }
args = ["read..."]

[tool.wrapper]
options = { "-m" = "tool:helper" }

[tool.mydb]
options = { "-c" = "text" }
args = ["secret"]

[[rule]]
id = "team.mytool"
decision = "allow"
risk = "low"
reason = "our own tool"
program = ["mytool", "wrapper", "helper", "mydb"]
examples.match = ["mytool -v src"]

[[rule]]
id = "team.nobody-listed"
decision = "allow"
risk = "low"
reason = "a rule on a program without a toolbox entry"
program = ["unlisted"]
"#;

fn policy() -> Policy {
    let file = PolicyFile::parse(USER, "user.toml").unwrap_or_else(|e| panic!("{e}"));
    Policy::with_user(file, "user.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn classify(p: &Policy, cmd: &str) -> Verdict {
    p.classify(cmd, &Context::fixed())
}

fn allowed(p: &Policy, cmd: &str) -> bool {
    classify(p, cmd).decision == Decision::Allow
}

/// The command is reviewed, and the reason names the word.
fn held_for(p: &Policy, cmd: &str, word: &str) {
    let v = classify(p, cmd);
    assert_eq!(
        v.decision,
        Decision::Review,
        "{cmd:?} should be held: {v:?}"
    );
    let hit = v
        .hits
        .iter()
        .find(|h| h.rule == "gate.unaccounted")
        .unwrap_or_else(|| panic!("{cmd:?}: no gate.unaccounted hit in {v:?}"));
    assert!(
        hit.reason.contains(word),
        "{cmd:?}: the reason should name {word:?}: {}",
        hit.reason
    );
}

#[test]
fn every_listed_word_runs_at_once() {
    let p = policy();
    for cmd in [
        "mytool",
        "mytool -v src",
        "mytool --verbose -n 5 src tests",
        "mytool -vn5 src",
        "mytool --count=10 --format json src",
        "mytool --color src",
        "mytool --color=never src",
        "mytool -o out.txt src",
        "mytool --output=/tmp/report.txt src",
        "mytool -c color.ui=always src",
        "mytool --url https://example.com/x",
        "mytool list --all 'any text'",
        "mytool describe-instances --id i-123",
        "mytool -- -v",
        "mytool run -q src",
        "wrapper -m helper -q src",
        "LANG=C mytool src",
    ] {
        assert!(
            allowed(&p, cmd),
            "{cmd:?} should run at once: {:?}",
            classify(&p, cmd)
        );
    }
}

#[test]
fn a_word_nobody_listed_holds_the_command_and_is_named() {
    let p = policy();
    held_for(&p, "mytool --unknown src", "--unknown");
    held_for(&p, "mytool -vx src", "-x");
    held_for(&p, "mytool --verb src", "--verb");
    held_for(&p, "wrapper stray", "stray");
    held_for(&p, "mytool list --force", "--force");
    held_for(&p, "mytool --describe-all", "--describe-all");
    held_for(&p, "mytool run -rf /", "-rf");
    held_for(&p, "wrapper -m other", "other");
    held_for(&p, "unlisted --anything", "unlisted");
}

#[test]
fn values_of_the_wrong_kind_hold_the_command() {
    let p = policy();
    held_for(&p, "mytool -n lots src", "lots");
    held_for(&p, "mytool --format yaml src", "yaml");
    held_for(&p, "mytool --verbose=yes src", "--verbose");
    held_for(&p, "mytool -o /etc/cron.d/x src", "/etc/cron.d/x");
    held_for(&p, "mytool --output=~/.bashrc src", "~/.bashrc");
    held_for(&p, "mytool -o/etc/passwd src", "/etc/passwd");
    held_for(&p, "mytool -o=/etc/passwd src", "/etc/passwd");
    held_for(
        &p,
        "mytool -o .git/hooks/pre-commit src",
        ".git/hooks/pre-commit",
    );
    held_for(&p, "mytool -o \"$OUT\" src", "");
    held_for(&p, "mytool --exec 'id' src", "id");
    held_for(
        &p,
        "mytool --url http://169.254.169.254/latest/meta-data/",
        "169.254",
    );
    held_for(&p, "mytool --url http://user:pw@example.com/", "user:pw");
    held_for(&p, "mytool --url file:///etc/passwd", "file:");
    held_for(&p, "mytool -c core.pager=sh src", "core.pager");
    held_for(&p, "mytool $OPTS src", "");
}

#[test]
fn variables_in_front_of_a_command_must_be_harmless() {
    let p = policy();
    held_for(&p, "FOO=1 mytool src", "FOO=1");
    held_for(&p, "PATH=/tmp/evil:/usr/bin mytool src", "PATH=");
    held_for(&p, "env GOFLAGS=-toolexec=/tmp/x mytool src", "GOFLAGS");
    assert!(allowed(&p, "TZ=UTC NO_COLOR=1 mytool src"));
}

#[test]
fn secrets_expanded_into_an_allowed_command_are_held() {
    let p = policy();
    held_for(&p, "mytool \"$GITHUB_TOKEN\"", "secret");
    held_for(&p, "mytool list \"$AWS_SECRET_ACCESS_KEY\"", "secret");
    assert!(allowed(&p, "mytool \"$HOME/src\""));
    // Where the tool itself uses a credential, the variable may stand.
    assert!(allowed(&p, "mydb \"$DATABASE_URL\" -c 'select 1'"));
    assert!(allowed(&p, "mydb \"$PGURL\""));
    held_for(&p, "mydb -c \"$DATABASE_URL\"", "secret");
}

#[test]
fn items_appended_by_xargs_count_as_arguments_only_where_no_option_can_harm() {
    let p = policy();
    // helper's options are all harmless: the items from stdin are arguments.
    assert!(allowed(&p, "helper -q | xargs helper -q"));
    // mytool has options that write and run code: an item could be one.
    held_for(&p, "helper -q | xargs mytool -v", "");
}

#[test]
fn a_user_entry_adds_to_the_built_in_entry() {
    let user = r#"
[tool.git.sub.frobnicate]
options = { "--hard" = "flag" }

[[rule]]
id = "team.git-frobnicate"
decision = "allow"
risk = "low"
reason = "our own git alias"
program = ["git"]
subcommand = ["frobnicate"]
"#;
    let file = PolicyFile::parse(user, "user.toml").unwrap_or_else(|e| panic!("{e}"));
    let p = Policy::with_user(file, "user.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(allowed(&p, "git frobnicate --hard"));
    held_for(&p, "git frobnicate --soft", "--soft");
    // The built-in subcommands are still there.
    assert!(allowed(&p, "git status"));
}

#[test]
fn a_bad_toolbox_entry_does_not_load() {
    for (text, says) in [
        (
            "[tool.x]\noptions = { \"-o\" = \"file\" }\n",
            "unknown kind",
        ),
        (
            "[tool.x]\noptions = { \"o\" = \"flag\" }\n",
            "must start with",
        ),
        (
            "[tool.x]\nargs = [\"read...\", \"text\"]\n",
            "only the last",
        ),
        ("[tool.x]\nwhatever = 1\n", "unknown field"),
    ] {
        let err = PolicyFile::parse(text, "user.toml")
            .map_err(|e| e.to_string())
            .and_then(|f| Policy::with_user(f, "user.toml").map_err(|e| e.to_string()));
        match err {
            Err(e) => assert!(e.contains(says), "{text:?}: {e}"),
            Ok(_) => panic!("{text:?} should not load"),
        }
    }
}

/// Every policy example in the README loads, its rule examples holding.
#[test]
fn the_readme_policies_load() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipped: {} is not readable", path.display());
        return;
    };
    let mut blocks = 0;
    for block in text.split("```toml\n").skip(1) {
        let body = block.split("```").next().unwrap_or("");
        if !body.contains("[[rule]]") && !body.contains("[tool.") {
            continue;
        }
        blocks += 1;
        let file = PolicyFile::parse(body, "README.md").unwrap_or_else(|e| panic!("{e}\n{body}"));
        if let Err(e) = Policy::with_user(file, "README.md") {
            panic!("a README policy does not load: {e}\n{body}");
        }
    }
    assert!(
        blocks >= 2,
        "expected the README's policy examples, found {blocks}"
    );
}
