//! Login checking for the test server: anonymous access (users `anonymous` and `ftp`, any
//! password) when enabled, plus a fixed list of user/password pairs.
//!
//! A known user with a wrong password, or an unknown user, is refused; libunftp then answers
//! `530 Authentication failed` to `PASS`. Every accepted user gets libunftp's `DefaultUser`, so
//! all of them see the same root folder.

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use unftp_core::auth::{AuthenticationError, Authenticator, Credentials, Principal};

/// An [`Authenticator`] with anonymous access and a static user table.
pub(super) struct TestAuthenticator {
    anonymous: bool,
    users: Vec<(String, String)>,
    /// Counts every login checked (every `PASS`), if set.
    attempts: Option<Arc<AtomicU64>>,
}

impl TestAuthenticator {
    pub(super) fn new(anonymous: bool, users: Vec<(String, String)>) -> Self {
        TestAuthenticator {
            anonymous,
            users,
            attempts: None,
        }
    }

    /// Counts the logins checked into `attempts`.
    pub(super) fn counting(mut self, attempts: Arc<AtomicU64>) -> Self {
        self.attempts = Some(attempts);
        self
    }

    /// Tells whether `username` is one of the anonymous login names.
    fn is_anonymous_name(username: &str) -> bool {
        username.eq_ignore_ascii_case("anonymous") || username.eq_ignore_ascii_case("ftp")
    }

    /// Checks a login; `Ok` carries the name the session is known by.
    pub(super) fn check(
        &self,
        username: &str,
        password: Option<&str>,
    ) -> Result<String, AuthenticationError> {
        if self.anonymous && Self::is_anonymous_name(username) {
            return Ok(username.to_string());
        }
        match self.users.iter().find(|(user, _)| user == username) {
            Some((_, expected)) if password == Some(expected.as_str()) => Ok(username.to_string()),
            Some(_) => Err(AuthenticationError::BadPassword),
            None => Err(AuthenticationError::BadUser),
        }
    }
}

impl fmt::Debug for TestAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the passwords.
        let names: Vec<&str> = self.users.iter().map(|(user, _)| user.as_str()).collect();
        f.debug_struct("TestAuthenticator")
            .field("anonymous", &self.anonymous)
            .field("users", &names)
            .finish()
    }
}

#[async_trait]
impl Authenticator for TestAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        if let Some(attempts) = &self.attempts {
            attempts.fetch_add(1, Ordering::Relaxed);
        }
        self.check(username, creds.password.as_deref())
            .map(|username| Principal { username })
    }

    fn name(&self) -> &str {
        "ftpseg-testserver"
    }
}

#[cfg(test)]
mod tests {
    use super::TestAuthenticator;

    #[test]
    fn anonymous_and_users() {
        let auth = TestAuthenticator::new(true, vec![("alice".into(), "secret".into())]);
        assert!(auth.check("anonymous", Some("x@y")).is_ok());
        assert!(auth.check("FTP", None).is_ok());
        assert!(auth.check("alice", Some("secret")).is_ok());
        assert!(auth.check("alice", Some("wrong")).is_err());
        assert!(auth.check("alice", None).is_err());
        assert!(auth.check("bob", Some("secret")).is_err());

        let closed = TestAuthenticator::new(false, vec![]);
        assert!(closed.check("anonymous", Some("x")).is_err());
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
