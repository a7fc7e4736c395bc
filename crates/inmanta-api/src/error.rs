//! The failures of an API call, as values callers match on.

/// What went wrong with one API call. Every variant names the server (old or
/// new) and the call; none carries a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{server} server: {call} answered HTTP {status}: {message}")]
    Status { server: String, call: String, status: u16, message: String },

    /// No answer. `refused`: the connection was refused, which is what a
    /// stopped server looks like; anything else (a timeout, a reset) is no
    /// proof that it is stopped.
    #[error("{server} server does not answer {call}: {detail}")]
    Unreachable { server: String, call: String, detail: String, refused: bool },

    /// Something answers, but the TLS handshake failed (most often: its
    /// certificate is not signed by the CA we trust).
    #[error("{server} server: the TLS handshake of {call} failed: {detail}")]
    Tls { server: String, call: String, detail: String },

    #[error("{server} server: {call}: unexpected answer: {detail}")]
    Decode { server: String, call: String, detail: String },

    #[error("{server} server: {detail}")]
    Setup { server: String, detail: String },
}

impl Error {
    /// What to do, where the failure itself tells: a refused token, an
    /// untrusted certificate.
    pub fn advice(&self) -> Option<String> {
        // Intermediate servers use the new side's token and CA.
        let side = |server: &str| if server.starts_with("intermediate") { "new".to_owned() } else { server.to_owned() };
        match self {
            Error::Status { server, status: 401, .. } => {
                Some(format!("is the token missing or wrong? see `{}.token` in the config", side(server)))
            }
            Error::Status { server, status: 403, .. } => Some(format!(
                "the token is refused: is it expired, signed with another key or issuer, or scoped to one \
                 environment? It needs client type `api`; see `{}.token` in the config",
                side(server)
            )),
            Error::Tls { server, .. } => Some(format!(
                "is `{server}.api_url` an https server, and `{}.ca_file` the CA that signed its certificate?",
                side(server)
            )),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when nothing answered at all (connection refused, timeout).
    /// A failed TLS handshake is not that: something answers there.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }

    /// True when the connection was refused: nothing listens on the port.
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Unreachable { refused: true, .. })
    }

    /// True when the TLS handshake failed (an untrusted certificate, or TLS
    /// spoken to a plain HTTP server).
    pub fn is_tls(&self) -> bool {
        matches!(self, Error::Tls { .. })
    }
}
