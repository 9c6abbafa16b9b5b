//! What `holdpoint-bot serve` prints at start: where the review queue is and
//! what to put in a runner's environment. With no runner registered yet it
//! registers one named `local` and writes its settings to a file only the
//! owner can read, so the quick start needs no extra step.

use crate::core::Bot;
use anyhow::{Context as _, Result};
use std::io::Write;
use std::net::SocketAddr;

/// The file holding the `local` runner's environment.
pub fn local_env_path(bot: &Bot) -> std::path::PathBuf {
    bot.config().data_dir.join("runner-local.env")
}

pub async fn print(bot: &Bot, addr: SocketAddr) -> Result<()> {
    let base = bot.config().public_url.clone().unwrap_or_else(|| {
        let scheme = if bot.config().tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{addr}")
    });
    let mut out = String::new();
    if bot.runners().await?.is_empty() {
        let token = bot.add_runner("local").await?;
        let path = local_env_path(bot);
        write_private(
            &path,
            &format!("export HOLDPOINT_URL={base}\nexport HOLDPOINT_TOKEN={token}\n"),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        out.push_str(&format!(
            "Registered a runner named `local`. Point runners on this machine at the bot with:\n\n    . {}\n\n",
            path.display()
        ));
    } else {
        out.push_str(&format!(
            "Runners connect to {base} with HOLDPOINT_URL={base} and a token from `holdpoint-bot runner add NAME`.\n\n"
        ));
    }
    let link = crate::web::login_link(bot, &base, "local").await?;
    out.push_str(&format!(
        "Review queue (this link works once; `holdpoint-bot login-link` makes another):\n\n    {link}\n"
    ));
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "\n{out}");
    Ok(())
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}
