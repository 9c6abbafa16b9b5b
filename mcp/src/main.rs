//! `holdpoint-mcp` (run as `holdpoint mcp`): the MCP server over stdio.
//! It refuses to start when the policy does not load.

#![forbid(unsafe_code)]

use anyhow::{Context as _, Result};
use rmcp::ServiceExt as _;

#[derive(Debug, Default)]
struct Args {
    policy: Option<std::path::PathBuf>,
}

fn args() -> Result<Args> {
    let mut out = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--policy" => {
                out.policy = Some(it.next().context("--policy needs a file")?.into());
            }
            "-h" | "--help" => {
                println!(
                    "holdpoint mcp [--policy FILE]: an MCP server on stdio with the tools run_command and check_command, gated by holdpoint"
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let policy = holdpoint_runner::config::load_policy(args.policy.as_deref())
        .context("refusing to start: the policy does not load")?;
    let agent = std::env::var("HOLDPOINT_AGENT")
        .ok()
        .map(|a| a.trim().chars().take(64).collect::<String>())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "mcp".into());
    let service = holdpoint_mcp::Gate::new(policy, agent)
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP session did not start")?;
    service.waiting().await.context("the MCP session failed")?;
    Ok(())
}
