//! The MCP tools: `run_command` and `check_command`.

use crate::exec;
use holdpoint_runner::gate::{self, Outcome};
use holdpoint_shared::{Context, Policy};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ProgressNotificationParam, RequestMetaObject};
use rmcp::{Peer, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long an allowed command may run when the call does not say.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest run a call may ask for.
pub const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(3600);
/// How often a waiting call reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The server: the loaded policy and the gate around it.
#[derive(Clone)]
pub struct Gate {
    policy: Arc<Policy>,
    agent: String,
}

/// `run_command`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    /// The shell command line to run (bash syntax).
    pub command: String,
    /// The absolute directory to run it in (default: the server's).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Seconds the command may run once allowed (default 120, at most 3600).
    /// The wait for a reviewer is not counted.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// `check_command`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckArgs {
    /// The shell command line to classify.
    pub command: String,
    /// The absolute directory it would run in (default: the server's).
    #[serde(default)]
    pub cwd: Option<String>,
}

fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

impl Gate {
    /// A gate over `policy`; `agent` names the agent on review requests.
    pub fn new(policy: Policy, agent: String) -> Gate {
        Gate {
            policy: Arc::new(policy),
            agent,
        }
    }

    fn context(cwd: Option<&str>) -> Result<(Context, PathBuf), String> {
        let ctx = Context::from_process();
        match cwd {
            None => {
                let dir =
                    std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?;
                Ok((ctx, dir))
            }
            Some(c) if !c.starts_with('/') => {
                Err(format!("cwd must be an absolute directory, not {c:?}"))
            }
            Some(c) if !std::path::Path::new(c).is_dir() => {
                Err(format!("cwd {c:?} is not a directory"))
            }
            Some(c) => Ok((ctx.with_cwd(c.to_string()), PathBuf::from(c))),
        }
    }
}

#[tool_router(server_handler)]
impl Gate {
    /// Runs a shell command through holdpoint's approval gate. Allowed
    /// commands run at once; commands that need a human's approval wait
    /// for a reviewer (progress is reported meanwhile); denied commands are
    /// an error that says why. Returns the exit code, stdout and stderr
    /// (each cut at 64 KiB, which the result says).
    #[tool(name = "run_command")]
    async fn run_command(
        &self,
        Parameters(args): Parameters<RunArgs>,
        meta: RequestMetaObject,
        client: Peer<RoleServer>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let (mut ctx, dir) = match Gate::context(args.cwd.as_deref()) {
            Ok(c) => c,
            Err(e) => return Ok(tool_error(format!("holdpoint: {e}; nothing was run"))),
        };
        holdpoint_runner::project::establish(&mut ctx, &self.policy, &args.command);
        let timeout = match args.timeout_secs {
            None => DEFAULT_RUN_TIMEOUT,
            Some(0) => {
                return Ok(tool_error(
                    "holdpoint: timeout_secs must be positive; nothing was run",
                ));
            }
            Some(s) => Duration::from_secs(s).min(MAX_RUN_TIMEOUT),
        };
        let policy = self.policy.clone();
        let agent = self.agent.clone();
        let line = args.command.clone();
        let settling = tokio::task::spawn_blocking(move || {
            let (verdict, outcome) = gate::settle(
                &policy,
                &gate::Invocation {
                    line: &line,
                    ctx: &ctx,
                    front_end: "mcp",
                    agent: Some(agent),
                    session: None,
                },
            );
            (verdict.decision, outcome)
        });
        tokio::pin!(settling);
        let token = meta.get_progress_token();
        let mut step = 0u32;
        let settled = loop {
            tokio::select! {
                done = &mut settling => break done,
                _ = tokio::time::sleep(PROGRESS_EVERY) => {
                    step += 1;
                    if let Some(token) = &token {
                        let _ = client
                            .notify_progress(
                                ProgressNotificationParam::new(token.clone(), f64::from(step))
                                    .with_message("holdpoint: waiting for a human reviewer to approve this command"),
                            )
                            .await;
                    }
                }
            }
        };
        let (_, outcome) = match settled {
            Ok(s) => s,
            Err(_) => return Ok(tool_error("holdpoint: internal error; nothing was run")),
        };
        match outcome {
            Outcome::Refuse { message, .. } => Ok(tool_error(message)),
            Outcome::Run => match exec::run(&args.command, &dir, timeout).await {
                Ok(ran) => {
                    let value = serde_json::to_value(&ran).map_err(|e| {
                        rmcp::ErrorData::internal_error(
                            format!("cannot encode the result: {e}"),
                            None,
                        )
                    })?;
                    let mut result = CallToolResult::structured(value);
                    if ran.timed_out {
                        result = CallToolResult::structured_error(serde_json::json!({
                            "timed_out": true,
                            "message": format!("holdpoint: the command ran longer than {}s and was stopped", timeout.as_secs()),
                        }));
                    }
                    Ok(result)
                }
                Err(e) => Ok(tool_error(format!("holdpoint: {e}"))),
            },
        }
    }

    /// Classifies a shell command with holdpoint's policy without running
    /// it: the decision (allow, review or deny), the risk, and the rules
    /// and reasons that decided.
    #[tool(name = "check_command")]
    async fn check_command(
        &self,
        Parameters(args): Parameters<CheckArgs>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let (mut ctx, _) = match Gate::context(args.cwd.as_deref()) {
            Ok(c) => c,
            Err(e) => return Ok(tool_error(format!("holdpoint: {e}"))),
        };
        holdpoint_runner::project::establish(&mut ctx, &self.policy, &args.command);
        let v = self.policy.classify(&args.command, &ctx);
        Ok(CallToolResult::structured(serde_json::json!({
            "command": args.command,
            "decision": v.decision,
            "risk": v.risk,
            "rules": v.deciding_rules(),
            "reasons": v.deciding_reasons(),
        })))
    }
}
