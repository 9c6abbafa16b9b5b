//! `holdpoint mcp`: starts the MCP server, `holdpoint-mcp`, installed
//! beside this binary. The server lives in its own crate and binary so that
//! the gate, which starts for every command an agent runs, carries no async
//! runtime; this module only finds it and hands over the process.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The server's file name.
pub const SERVER: &str = "holdpoint-mcp";

/// Where the server must be: next to the running `holdpoint`.
pub fn server_path() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    Some(me.parent()?.join(SERVER))
}

/// Replaces this process with the server, passing `args` on; returns only
/// when it cannot start, saying why.
pub fn exec(args: &[String]) -> ExitCode {
    let Some(path) = server_path() else {
        eprintln!("holdpoint: cannot tell where this binary is, so cannot find {SERVER}");
        return ExitCode::from(crate::gate::EXIT_GATE_ERROR as u8);
    };
    if !path.is_file() {
        eprintln!(
            "holdpoint: the MCP server is not installed: expected {} beside this binary (build or install the holdpoint-mcp crate)",
            path.display()
        );
        return ExitCode::from(crate::gate::EXIT_GATE_ERROR as u8);
    }
    let err = std::process::Command::new(&path).args(args).exec();
    eprintln!("holdpoint: cannot start {}: {err}", path.display());
    ExitCode::from(crate::gate::EXIT_GATE_ERROR as u8)
}
