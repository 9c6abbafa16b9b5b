//! Runner registration and tokens. A token is shown once, when it is made;
//! the database keeps only its SHA-256 (a token is 160 random bits, so a
//! fast hash is enough).

use super::Bot;
use super::audit::NewEvent;
use super::db::{random_hex, sha256_hex};
use super::entity::runner;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::json;

/// Prefix of every runner token, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "hpr_";

/// Why a runner command failed.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("a runner named {0:?} already exists (revoke it first, or pick another name)")]
    Exists(String),
    #[error("no runner named {0:?}")]
    NotFound(String),
    #[error("runner names are 1–64 characters of letters, digits, `.`, `_` and `-`; {0:?} is not")]
    BadName(String),
}

/// A registered runner, as `runner list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerInfo {
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_seen_at: Option<i64>,
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Runner(String),
    Revoked(String),
    Unknown,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Bot {
    /// Registers a runner; returns its token (the only time it is seen).
    /// A revoked name can be registered again.
    pub async fn add_runner(&self, name: &str) -> Result<String, RunnerError> {
        if !valid_name(name) {
            return Err(RunnerError::BadName(name.to_string()));
        }
        let token = format!("{TOKEN_PREFIX}{}", random_hex(20));
        let hash = sha256_hex(token.as_bytes());
        let existing = runner::Entity::find()
            .filter(runner::Column::Name.eq(name))
            .one(&self.db)
            .await?;
        match existing {
            Some(r) if r.revoked_at.is_none() => {
                return Err(RunnerError::Exists(name.to_string()));
            }
            Some(r) => {
                let mut a: runner::ActiveModel = r.into();
                a.token_hash = Set(hash);
                a.created_at = Set(self.now_ms());
                a.revoked_at = Set(None);
                a.update(&self.db).await?;
            }
            None => {
                runner::ActiveModel {
                    name: Set(name.to_string()),
                    token_hash: Set(hash),
                    created_at: Set(self.now_ms()),
                    revoked_at: Set(None),
                    last_seen_at: Set(None),
                    ..Default::default()
                }
                .insert(&self.db)
                .await?;
            }
        }
        self.audit(&[NewEvent::at(
            self.now_ms(),
            "runner.added",
            Some(name),
            None,
            json!({}),
        )])
        .await?;
        Ok(token)
    }

    /// Revokes a runner's token and cancels its pending requests, so none of
    /// them can be approved afterwards. Open connections are closed by the
    /// server within a second.
    pub async fn revoke_runner(&self, name: &str) -> Result<(), RunnerError> {
        let res = runner::Entity::update_many()
            .col_expr(runner::Column::RevokedAt, Expr::value(self.now_ms()))
            .filter(runner::Column::Name.eq(name))
            .filter(runner::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        if res.rows_affected == 0 {
            return Err(RunnerError::NotFound(name.to_string()));
        }
        self.audit(&[NewEvent::at(
            self.now_ms(),
            "runner.revoked",
            Some(name),
            None,
            json!({}),
        )])
        .await?;
        let cancelled = self
            .cancel_pending_of(name, "the runner's token was revoked")
            .await
            .map_err(|e| match e {
                super::LifecycleError::Db(e) => RunnerError::Db(e),
                other => RunnerError::Db(DbErr::Custom(other.to_string())),
            })?;
        if cancelled > 0 {
            tracing::info!(
                runner = name,
                cancelled,
                "cancelled a revoked runner's requests"
            );
        }
        let closed = self.hub.close_runners(
            &[name.to_string()],
            holdpoint_shared::protocol::close::REVOKED,
            "this runner's token was revoked",
        );
        if closed > 0 {
            tracing::info!(
                runner = name,
                closed,
                "closed the connections of a revoked runner"
            );
        }
        Ok(())
    }

    /// Every runner, by name.
    pub async fn runners(&self) -> Result<Vec<RunnerInfo>, DbErr> {
        Ok(runner::Entity::find()
            .order_by_asc(runner::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| RunnerInfo {
                name: r.name,
                created_at: r.created_at,
                revoked_at: r.revoked_at,
                last_seen_at: r.last_seen_at,
            })
            .collect())
    }

    /// Checks a bearer token.
    pub async fn authenticate(&self, token: &str) -> Result<Auth, DbErr> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(Auth::Unknown);
        }
        let hash = sha256_hex(token.as_bytes());
        Ok(
            match runner::Entity::find()
                .filter(runner::Column::TokenHash.eq(hash))
                .one(&self.db)
                .await?
            {
                None => Auth::Unknown,
                Some(r) if r.revoked_at.is_some() => Auth::Revoked(r.name),
                Some(r) => Auth::Runner(r.name),
            },
        )
    }

    /// Whether the named runner is still allowed in (checked on every
    /// submission, so a revocation made by another process counts at once).
    pub async fn runner_active(&self, name: &str) -> Result<bool, DbErr> {
        Ok(runner::Entity::find()
            .filter(runner::Column::Name.eq(name))
            .filter(runner::Column::RevokedAt.is_null())
            .one(&self.db)
            .await?
            .is_some())
    }

    /// Names of revoked runners that still have connections here.
    pub(super) async fn revoked_but_connected(&self) -> Result<Vec<String>, DbErr> {
        if self.hub.connections() == 0 {
            return Ok(vec![]);
        }
        let revoked = runner::Entity::find()
            .filter(runner::Column::RevokedAt.is_not_null())
            .all(&self.db)
            .await?;
        Ok(revoked
            .into_iter()
            .map(|r| r.name)
            .filter(|n| self.hub.is_connected(n))
            .collect())
    }

    /// Records that a runner connected.
    pub async fn seen(&self, name: &str) -> Result<(), DbErr> {
        runner::Entity::update_many()
            .col_expr(runner::Column::LastSeenAt, Expr::value(self.now_ms()))
            .filter(runner::Column::Name.eq(name))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
