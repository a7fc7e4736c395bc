//! Secrets: API tokens and database passwords. They are read once, kept in a
//! type whose `Debug` and `Display` print a placeholder, and leave the process
//! only as an HTTP header marked sensitive or through a private PGPASSFILE.

use std::fmt;

use camino::{Utf8Path, Utf8PathBuf};
use serde::Deserialize;

/// A secret value. Printing it prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that hands it over.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret comes from: `{ env = "NAME" }` or `{ file = "/path" }`.
/// Inline values are refused on purpose: a config file gets copied around.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<Utf8PathBuf>,
}

impl SecretSource {
    pub(crate) fn make_paths_absolute(&mut self, base: &Utf8Path) {
        if let Some(file) = &mut self.file {
            *file = base.join(&*file);
        }
    }

    /// Reads the secret. Errors name the source, never the value.
    pub fn read(&self) -> Result<Secret, String> {
        let value = match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
                text.lines().next().unwrap_or("").to_owned()
            }
            (Some(_), Some(_)) => return Err("give either `env` or `file`, not both".to_owned()),
            (None, None) => return Err("give `env = \"NAME\"` or `file = \"/path\"`".to_owned()),
        };
        let value = value.trim();
        if value.is_empty() {
            let from = self.env.as_deref().map_or_else(|| self.file.as_ref().unwrap().to_string(), |v| format!("${v}"));
            return Err(format!("{from} is empty"));
        }
        Ok(Secret(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn reads_files_and_refuses_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("token")).unwrap();
        std::fs::write(&path, "  abc.def  \nsecond line ignored\n").unwrap();
        let src = SecretSource { env: None, file: Some(path.clone()) };
        assert_eq!(src.read().unwrap().expose(), "abc.def");
        std::fs::write(&path, "\n").unwrap();
        let err = src.read().unwrap_err();
        assert!(err.contains("is empty"), "{err}");
        let both = SecretSource { env: Some("X".into()), file: Some(path) };
        assert!(both.read().unwrap_err().contains("not both"));
    }
}
