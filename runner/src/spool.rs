//! The local audit spool: every verdict the runner reaches is appended to a
//! file at once, and a background flusher sends the file to the bot when it
//! can. An allowed command never waits on the network.
//!
//! Files in the spool directory (`HOLDPOINT_SPOOL_DIR`, default
//! `$XDG_STATE_HOME/holdpoint/spool`, i.e. `~/.local/state/holdpoint/spool`):
//!
//! - `audit.jsonl`: one [`AuditEvent`] per line, appended with one write under
//!   a shared lock;
//! - `audit.sent`: how many bytes of it the bot has acknowledged;
//! - `flush.lock`: held by the one running flusher;
//! - `flush.next`: before this time (unix ms) no new flusher starts (backoff
//!   while the bot is down);
//! - `audit.lost`: how many events could not be appended (a full disk), a
//!   fixed-width number rewritten in place, so counting needs no new space;
//! - `audit.rejected`: lines of `audit.jsonl` that are not events (the torn
//!   end of a write cut short by a crash or a full disk), kept aside as they
//!   were, never silently dropped.
//!
//! An append that finds the file not ending in a newline (a torn last line)
//! starts its own line, so the torn fragment stays a line of its own.
//!
//! The spool holds commands as typed, like shell history: the directory is
//! created 0700 and the file 0600, and the flusher redacts every command
//! before it leaves the machine.
//!
//! The bot stores each event id once, so a resend after a crash counts once.
//! The file is truncated only when every byte is acknowledged, under an
//! exclusive lock that appenders respect.

use crate::bot::{BotConfig, ConnectError, Connection};
use anyhow::{Context as _, Result};
use holdpoint_shared::protocol::{AuditEvent, BotMessage, MAX_AUDIT_BATCH, RunnerMessage, now_ms};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most bytes of events in one batch (well under the frame limit).
const MAX_BATCH_BYTES: usize = 768 * 1024;

/// The spool directory.
pub fn dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HOLDPOINT_SPOOL_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state"))
        })?;
    Some(base.join("holdpoint").join("spool"))
}

fn events_path(dir: &Path) -> PathBuf {
    dir.join("audit.jsonl")
}

/// Appends one event. Errors are returned, not hidden: the caller tells the
/// agent the audit trail is incomplete.
pub fn record(dir: &Path, event: &AuditEvent) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the spool {}", dir.display()))?;
    }
    let lost = LostCounter::open(dir);
    let mut line = serde_json::to_vec(event)?;
    line.push(b'\n');
    let appended = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(events_path(dir))
            .with_context(|| format!("cannot open the spool in {}", dir.display()))?;
        f.lock_shared().context("cannot lock the spool")?;
        if torn_tail(&f) {
            line.insert(0, b'\n');
        }
        f.write_all(&line).context("cannot write to the spool")?;
        Ok(())
    })();
    if appended.is_err()
        && let Some(lost) = lost
    {
        lost.add_one();
    }
    appended
}

/// Whether the spool's last byte is not a newline (a write was cut short).
fn torn_tail(f: &File) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut last = [0u8; 1];
    len > 0 && f.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
}

/// `audit.lost`: a fixed-width count, made when the spool is healthy so
/// that counting a loss later (on a full disk) only rewrites its bytes.
struct LostCounter(File);

const LOST_WIDTH: usize = 20;

impl LostCounter {
    fn open(dir: &Path) -> Option<LostCounter> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("audit.lost");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .ok()?;
        if f.metadata().ok()?.len() < LOST_WIDTH as u64 {
            use std::os::unix::fs::FileExt;
            f.write_all_at(format!("{:0w$}", 0, w = LOST_WIDTH).as_bytes(), 0)
                .ok()?;
        }
        Some(LostCounter(f))
    }

    fn add_one(&self) {
        use std::os::unix::fs::FileExt;
        if self.0.lock().is_err() {
            return;
        }
        let mut buf = [0u8; LOST_WIDTH];
        let n = self
            .0
            .read_exact_at(&mut buf, 0)
            .ok()
            .and_then(|_| std::str::from_utf8(&buf).ok()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let _ = self
            .0
            .write_all_at(format!("{:0w$}", n + 1, w = LOST_WIDTH).as_bytes(), 0);
        let _ = self.0.unlock();
    }
}

/// How many events could not be appended to the spool in `dir`.
pub fn lost(dir: &Path) -> u64 {
    read_u64(&dir.join("audit.lost"))
}

/// How many lines were kept aside in `audit.rejected`.
pub fn rejected(dir: &Path) -> u64 {
    std::fs::read(dir.join("audit.rejected"))
        .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
        .unwrap_or(0)
}

/// Keeps a line that is not an event in `audit.rejected`.
fn keep_aside(dir: &Path, line: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join("audit.rejected"))?;
    f.write_all(line)
}

fn read_u64(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_u64(p: &Path, v: u64) -> std::io::Result<()> {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, v.to_string())?;
    std::fs::rename(tmp, p)
}

fn unsent(dir: &Path) -> u64 {
    let len = std::fs::metadata(events_path(dir))
        .map(|m| m.len())
        .unwrap_or(0);
    len.saturating_sub(read_u64(&dir.join("audit.sent")))
}

/// One line about what waits in the spool.
pub fn status(dir: &Path) -> String {
    let n = unsent(dir);
    let next = read_u64(&dir.join("flush.next")) as i64;
    let mut s = format!(
        "{}: {n} bytes of events not yet acknowledged by the bot",
        dir.display()
    );
    let lost = lost(dir);
    if lost > 0 {
        s.push_str(&format!(
            "; {lost} events could not be recorded (see audit.lost)"
        ));
    }
    let rejected = rejected(dir);
    if rejected > 0 {
        s.push_str(&format!(
            "; {rejected} torn lines kept aside in audit.rejected"
        ));
    }
    if next > now_ms() {
        s.push_str(&format!(
            "; next attempt in {}s",
            (next - now_ms()) / 1000 + 1
        ));
    }
    s
}

/// Starts a background flusher if events wait, none runs, and the backoff
/// allows. Costs a few system calls when there is nothing to do.
pub fn kick(dir: &Path) {
    if unsent(dir) == 0 {
        return;
    }
    if now_ms() < read_u64(&dir.join("flush.next")) as i64 {
        return;
    }
    let Ok(lock) = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("flush.lock"))
    else {
        return;
    };
    if lock.try_lock().is_err() {
        return; // a flusher runs and will see the new events
    }
    drop(lock);
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    use std::os::unix::process::CommandExt;
    let _ = std::process::Command::new(exe)
        .args(["spool", "flush", "--quiet"])
        .env("HOLDPOINT_SPOOL_DIR", dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
}

/// Reads complete lines from `offset`: the events, and the offset after the
/// last complete line taken.
fn read_batch(dir: &Path, offset: u64) -> Result<(Vec<AuditEvent>, u64, usize)> {
    let mut f = match File::open(events_path(dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], offset, 0)),
        Err(e) => return Err(e.into()),
    };
    let len = f.metadata()?.len();
    if offset >= len {
        return Ok((vec![], offset, 0));
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take((MAX_BATCH_BYTES as u64).min(len - offset))
        .read_to_end(&mut buf)?;
    let mut events = Vec::new();
    let mut consumed = 0usize;
    let mut skipped = 0usize;
    // Lines before this offset were kept aside by an earlier read of the
    // same batch (one whose sending failed).
    let upto_path = dir.join("audit.rejected.upto");
    let kept_upto = read_u64(&upto_path);
    for line in buf.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") || events.len() >= MAX_AUDIT_BATCH {
            break;
        }
        consumed += line.len();
        if line == b"\n" {
            continue; // the newline a torn tail's next append started with
        }
        match serde_json::from_slice::<AuditEvent>(&line[..line.len() - 1]) {
            Ok(e) => events.push(e),
            Err(_) => {
                // Not sent, not lost: kept aside for a person to look at.
                // If even that fails, the batch stops here and is read
                // again next time.
                let end = offset + consumed as u64;
                if end > kept_upto {
                    if keep_aside(dir, line)
                        .and_then(|_| write_u64(&upto_path, end))
                        .is_err()
                    {
                        consumed -= line.len();
                        break;
                    }
                    skipped += 1;
                }
            }
        }
    }
    if consumed == 0 && buf.len() >= MAX_BATCH_BYTES {
        // One line larger than a batch: it cannot be sent; skip it.
        let rest = &buf;
        let skip = rest
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(rest.len());
        return Ok((vec![], offset + skip as u64, 1));
    }
    Ok((events, offset + consumed as u64, skipped))
}

/// Truncates the spool if everything in it is acknowledged.
fn compact(dir: &Path) -> Result<()> {
    let f = match OpenOptions::new().write(true).open(events_path(dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    f.lock()?;
    let sent_path = dir.join("audit.sent");
    if f.metadata()?.len() == read_u64(&sent_path) {
        f.set_len(0)?;
        write_u64(&sent_path, 0)?;
        // Offsets start again from zero.
        let _ = std::fs::remove_file(dir.join("audit.rejected.upto"));
    }
    Ok(())
}

/// What a flush did.
#[derive(Debug, Default)]
pub struct Flushed {
    pub sent: usize,
    pub skipped: usize,
}

/// Sends everything in the spool, then lingers `linger` for more (so a burst
/// of commands shares one flusher). Gives up after `give_up` of failing to
/// reach the bot, and leaves a backoff for the next attempt.
pub fn flush(cfg: &BotConfig, dir: &Path, linger: Duration, give_up: Duration) -> Result<Flushed> {
    std::fs::create_dir_all(dir)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("flush.lock"))?;
    if lock.try_lock().is_err() {
        return Ok(Flushed::default()); // another flusher is at it
    }
    let mut done = Flushed::default();
    let sent_path = dir.join("audit.sent");
    let mut conn: Option<Connection> = None;
    let mut idle_since = Instant::now();
    let mut failing_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let offset = read_u64(&sent_path);
        let (events, next, skipped) = read_batch(dir, offset)?;
        done.skipped += skipped;
        if events.is_empty() {
            if next != offset {
                write_u64(&sent_path, next)?;
                continue;
            }
            compact(dir)?;
            if idle_since.elapsed() >= linger {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        idle_since = Instant::now();
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::open(cfg, Instant::now() + Duration::from_secs(5)) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    if since.elapsed() >= give_up || matches!(e, ConnectError::Permanent(_)) {
                        write_u64(
                            &dir.join("flush.next"),
                            (now_ms() + backoff.as_millis() as i64) as u64,
                        )?;
                        anyhow::bail!("cannot send the audit spool: {e}");
                    }
                    std::thread::sleep(wait);
                    continue;
                }
            },
        };
        let events: Vec<AuditEvent> = events
            .into_iter()
            .map(|mut e| {
                e.command = holdpoint_shared::redact::redact(&e.command);
                e
            })
            .collect();
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let n = events.len();
        let result = c.send(&RunnerMessage::Audit { events }).and_then(|_| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.recv_until(deadline)? {
                    Some(BotMessage::AuditAck { ids: acked }) => {
                        if ids.iter().all(|i| acked.contains(i)) {
                            return Ok(());
                        }
                    }
                    Some(_) => {}
                    None => return Err(ConnectError::Transient("no acknowledgement".into())),
                }
            }
        });
        match result {
            Ok(()) => {
                write_u64(&sent_path, next)?;
                done.sent += n;
                failing_since = None;
                backoff = Duration::from_millis(200);
                let _ = std::fs::remove_file(dir.join("flush.next"));
            }
            Err(e) => {
                conn = None;
                if matches!(e, ConnectError::Permanent(_)) {
                    anyhow::bail!("the bot refused the audit events: {e}");
                }
            }
        }
    }
    if let Some(c) = conn {
        c.close();
    }
    drop(lock);
    // An event appended after the last look but before the lock was released
    // found the lock held and started no flusher: look once more.
    if unsent(dir) > 0 {
        kick(dir);
    }
    Ok(done)
}
