//! Users, tokens and permissions as replicated state: a user is stored with the SHA-256 of
//! its token (tokens are never stored or returned), and a token is recognised by comparing
//! hashes in constant time.
//!
//! Must never: store, log or return a token, or compare secrets in variable time.

use sha2::{Digest, Sha256};

use super::Broker;
use crate::error::BrokerError;
use crate::state::Command;
use crate::state::applier::users;
use crate::state::command::{Permission, User};

/// The SHA-256 of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal in constant time (for the lengths given).
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Broker {
    /// The user a token belongs to, if any.
    pub async fn authenticate(&self, token: &str) -> Result<Option<User>, BrokerError> {
        let hash = token_hash(token);
        let all = self.read(|s, _| users(s)).await?;
        let mut found = None;
        for u in all {
            if same_bytes(&u.token_sha256, &hash) {
                found = Some(u);
            }
        }
        Ok(found)
    }

    /// Every user (without tokens: only their hashes are stored).
    pub async fn users(&self) -> Result<Vec<User>, BrokerError> {
        self.read(|s, _| users(s)).await
    }

    /// Creates or replaces a user with `token`.
    pub async fn put_user(
        &self,
        name: &str,
        token: &str,
        admin: bool,
        permissions: Vec<Permission>,
    ) -> Result<(), BrokerError> {
        let user = User {
            name: name.to_owned(),
            token_sha256: token_hash(token),
            admin,
            permissions,
        };
        self.propose_checked(Command::PutUser(user)).await?;
        Ok(())
    }

    /// Deletes a user.
    pub async fn delete_user(&self, name: &str) -> Result<(), BrokerError> {
        self.propose_checked(Command::DeleteUser {
            name: name.to_owned(),
        })
        .await?;
        Ok(())
    }
}
