/// What went wrong with one API call. Every variant names the server (old or
/// new) and the call; none carries a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{server} server: {call} answered HTTP {status}: {message}{}", hint(*.status))]
    Status { server: String, call: String, status: u16, message: String },

    #[error("{server} server does not answer {call}: {detail}")]
    Unreachable { server: String, call: String, detail: String },

    #[error("{server} server: {call}: unexpected answer: {detail}")]
    Decode { server: String, call: String, detail: String },

    #[error("{server} server: {detail}")]
    Setup { server: String, detail: String },
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => " (is the token missing or wrong? see `token` in the config)",
        403 => " (the token is not allowed here: it needs client type `api` and must not be scoped to one environment)",
        _ => "",
    }
}

impl Error {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when nothing answered at all (connection refused, timeout).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}
