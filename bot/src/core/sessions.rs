//! Web queue logins: single-use login links and the sessions they become.
//!
//! Both are stored in `web_tokens` as the SHA-256 of their secret, so the
//! database never holds anything a browser could present. A login link is
//! consumed by one guarded update (`used_at IS NULL AND expires_at > now`),
//! so two browsers racing with the same link cannot both get a session.

use super::Bot;
use super::audit::NewEvent;
use super::db::{random_hex, sha256_hex};
use super::entity::web_token;
use super::reviewer::{Realm, Reviewer};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
};
use serde_json::json;

/// How long a login link stays valid.
pub const LOGIN_LINK_TTL_MS: i64 = 24 * 3600 * 1000;
/// How long a browser session lasts.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;
/// A login link secret: 20 random bytes as hex.
pub const LOGIN_SECRET_HEX: usize = 40;
/// A session secret: 32 random bytes as hex.
pub const SESSION_SECRET_HEX: usize = 64;

const KIND_LOGIN: &str = "login";
const KIND_SESSION: &str = "session";

/// A browser that logged in.
#[derive(Debug, Clone)]
pub struct Session {
    /// The reviewer's name, copied from the login link.
    pub name: String,
    /// The hash of the cookie's secret (the row's key).
    pub token_hash: String,
    pub expires_at: i64,
}

impl Session {
    /// The identity decisions made in this browser carry.
    pub fn reviewer(&self) -> Reviewer {
        Reviewer::new(Realm::Web, self.name.clone())
    }
}

/// What became of a login link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginUse {
    /// This call consumed it; the reviewer's name.
    Now(String),
    Used,
    Expired,
    Unknown,
}

/// Stores a login link valid until `expires_at`; returns its secret.
async fn new_login(
    db: &DatabaseConnection,
    name: &str,
    now: i64,
    expires_at: i64,
) -> Result<String, DbErr> {
    let secret = random_hex(LOGIN_SECRET_HEX / 2);
    web_token::ActiveModel {
        token_hash: Set(sha256_hex(secret.as_bytes())),
        kind: Set(KIND_LOGIN.into()),
        name: Set(name.to_string()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(secret)
}

async fn consume(db: &DatabaseConnection, secret: &str, now: i64) -> Result<LoginUse, DbErr> {
    let hash = sha256_hex(secret.as_bytes());
    let won = web_token::Entity::update_many()
        .col_expr(web_token::Column::UsedAt, Expr::value(now))
        .filter(web_token::Column::TokenHash.eq(hash.clone()))
        .filter(web_token::Column::Kind.eq(KIND_LOGIN))
        .filter(web_token::Column::UsedAt.is_null())
        .filter(web_token::Column::ExpiresAt.gt(now))
        .exec(db)
        .await?
        .rows_affected
        == 1;
    let row = web_token::Entity::find_by_id(hash)
        .filter(web_token::Column::Kind.eq(KIND_LOGIN))
        .one(db)
        .await?;
    Ok(match row {
        None => LoginUse::Unknown,
        Some(r) if won => LoginUse::Now(r.name),
        Some(r) if r.used_at.is_some() => LoginUse::Used,
        Some(r) if r.expires_at <= now => LoginUse::Expired,
        // Not won, yet neither used nor expired: cannot happen, but it is
        // not a login either.
        Some(_) => LoginUse::Used,
    })
}

impl Bot {
    /// Makes a single-use login link secret for a reviewer called `name`.
    pub async fn new_login_link(&self, name: &str) -> Result<String, DbErr> {
        let now = self.now_ms();
        new_login(&self.db, name, now, now + LOGIN_LINK_TTL_MS).await
    }

    /// What a login link's secret would do now, without using it:
    /// `LoginUse::Now(name)` means it would log in as `name`. Opening a
    /// link only looks; the page's button uses it, so a link previewer
    /// that fetches the link first leaves it working.
    pub async fn login_link_state(&self, secret: &str) -> Result<LoginUse, DbErr> {
        let hash = sha256_hex(secret.as_bytes());
        let now = self.now_ms();
        let row = web_token::Entity::find_by_id(hash)
            .filter(web_token::Column::Kind.eq(KIND_LOGIN))
            .one(&self.db)
            .await?;
        Ok(match row {
            None => LoginUse::Unknown,
            Some(r) if r.used_at.is_some() => LoginUse::Used,
            Some(r) if r.expires_at <= now => LoginUse::Expired,
            Some(r) => LoginUse::Now(r.name),
        })
    }

    /// Consumes a login link's secret.
    pub async fn use_login_link(&self, secret: &str) -> Result<LoginUse, DbErr> {
        consume(&self.db, secret, self.now_ms()).await
    }

    /// Starts a session for `name`; returns the cookie's secret. Forgets
    /// links and sessions that can no longer be used, and audits the login.
    pub async fn start_session(&self, name: &str) -> Result<String, DbErr> {
        let secret = random_hex(SESSION_SECRET_HEX / 2);
        let now = self.now_ms();
        web_token::ActiveModel {
            token_hash: Set(sha256_hex(secret.as_bytes())),
            kind: Set(KIND_SESSION.into()),
            name: Set(name.to_string()),
            created_at: Set(now),
            expires_at: Set(now + SESSION_TTL_MS),
            used_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        if let Err(e) = web_token::Entity::delete_many()
            .filter(web_token::Column::ExpiresAt.lt(now))
            .exec(&self.db)
            .await
        {
            tracing::warn!("cannot delete expired web tokens: {e}");
        }
        let reviewer = Reviewer::new(Realm::Web, name);
        if let Err(e) = self
            .audit(&[NewEvent::at(
                now,
                "web.login",
                None,
                None,
                json!({ "reviewer": reviewer.to_string() }),
            )])
            .await
        {
            tracing::warn!("cannot audit a web login: {e}");
        }
        Ok(secret)
    }

    /// The session whose cookie secret is `secret`, if it is valid.
    pub async fn session(&self, secret: &str) -> Result<Option<Session>, DbErr> {
        let hash = sha256_hex(secret.as_bytes());
        let row = web_token::Entity::find_by_id(hash.clone())
            .filter(web_token::Column::Kind.eq(KIND_SESSION))
            .filter(web_token::Column::ExpiresAt.gt(self.now_ms()))
            .one(&self.db)
            .await?;
        Ok(row.map(|r| Session {
            name: r.name,
            token_hash: hash,
            expires_at: r.expires_at,
        }))
    }

    /// Whether the session is still valid (not logged out, not expired).
    pub async fn session_valid(&self, s: &Session) -> Result<bool, DbErr> {
        Ok(web_token::Entity::find_by_id(s.token_hash.clone())
            .filter(web_token::Column::Kind.eq(KIND_SESSION))
            .filter(web_token::Column::ExpiresAt.gt(self.now_ms()))
            .one(&self.db)
            .await?
            .is_some())
    }

    /// Ends a session (logout).
    pub async fn end_session(&self, s: &Session) -> Result<(), DbErr> {
        web_token::Entity::update_many()
            .col_expr(web_token::Column::ExpiresAt, Expr::value(self.now_ms()))
            .filter(web_token::Column::TokenHash.eq(s.token_hash.clone()))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdpoint_shared::protocol::now_ms;

    async fn database() -> (std::path::PathBuf, DatabaseConnection) {
        let dir = std::env::temp_dir().join(format!(
            "holdpoint-web-auth-{}-{}",
            std::process::id(),
            random_hex(6)
        ));
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let db = super::super::db::open_and_migrate(&url)
            .await
            .expect("database");
        (dir, db)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_login_link_works_once_and_not_after_it_expires() {
        let (dir, db) = database().await;
        let now = now_ms();
        let secret = new_login(&db, "alice", now, now + 60_000).await.unwrap();
        assert!(
            matches!(consume(&db, &secret, now_ms()).await.unwrap(), LoginUse::Now(n) if n == "alice")
        );
        assert!(matches!(
            consume(&db, &secret, now_ms()).await.unwrap(),
            LoginUse::Used
        ));

        let old = new_login(&db, "bob", now, now_ms() - 1).await.unwrap();
        assert!(matches!(
            consume(&db, &old, now_ms()).await.unwrap(),
            LoginUse::Expired
        ));
        assert!(matches!(
            consume(&db, &"0".repeat(LOGIN_SECRET_HEX), now_ms())
                .await
                .unwrap(),
            LoginUse::Unknown
        ));

        // Racing browsers: exactly one gets a session.
        let secret = new_login(&db, "carol", now, now_ms() + 60_000)
            .await
            .unwrap();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (db, secret) = (db.clone(), secret.clone());
                tokio::spawn(async move { consume(&db, &secret, now_ms()).await })
            })
            .collect();
        let mut won = 0;
        for r in racers {
            if let Ok(Ok(LoginUse::Now(_))) = r.await {
                won += 1;
            }
        }
        assert_eq!(won, 1);
        drop(db);
        let _ = std::fs::remove_dir_all(dir);
    }
}
