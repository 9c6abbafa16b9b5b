//! The web review queue. (Placeholder until the page lands.)

use crate::db::{random_hex, sha256_hex};
use crate::entity::web_token;
use crate::state::Bot;
use crate::time::now_ms;
use axum::Router;
use sea_orm::{ActiveModelTrait, Set};
use std::sync::Arc;

/// How long a login link stays valid.
pub const LOGIN_LINK_TTL_MS: i64 = 24 * 3600 * 1000;

/// The web routes.
pub fn router() -> Router<Arc<Bot>> {
    Router::new()
}

/// Makes a single-use login link for a reviewer called `name`.
pub async fn login_link(bot: &Bot, base: &str, name: &str) -> Result<String, sea_orm::DbErr> {
    let secret = random_hex(20);
    let now = now_ms();
    web_token::ActiveModel {
        token_hash: Set(sha256_hex(secret.as_bytes())),
        kind: Set("login".into()),
        name: Set(name.to_string()),
        created_at: Set(now),
        expires_at: Set(now + LOGIN_LINK_TTL_MS),
        used_at: Set(None),
    }
    .insert(&bot.db)
    .await?;
    Ok(format!("{base}/login?token={secret}"))
}
