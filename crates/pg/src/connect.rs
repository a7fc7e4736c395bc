//! Connections of the PostgreSQL driver (tokio-postgres): the same target,
//! password and `sslmode` the client tools get, and errors that name the
//! database and say what to do, read from the SQLSTATE.

use std::{error::Error as _, io, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use camino::Utf8PathBuf;
use rustls::{
    CertificateError, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio_postgres::{Client, config::SslMode, error::SqlState};

use migrate_core::{ErrorKind, Failure};

use crate::Target;

/// How long a connection attempt may take (as `PGCONNECT_TIMEOUT` for the tools).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connection notices that its network is gone. A cut link drops
/// packets without a word, and TCP alone would wait about 15 minutes (and a
/// reader that sends nothing, as pg_dump in a COPY, forever): TCP keepalives
/// probe an idle connection after 10 s, every 5 s, and give up after 3
/// unanswered probes; data unacknowledged for 30 s ends it too. A slow
/// query never trips them: the server's kernel answers probes and acks.
pub(crate) const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
pub(crate) const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
pub(crate) const KEEPALIVES_COUNT: u32 = 3;
pub(crate) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The same for libpq's tools, as connection-string keywords.
pub(crate) fn libpq_keepalives() -> String {
    format!(
        "keepalives=1 keepalives_idle={} keepalives_interval={} keepalives_count={KEEPALIVES_COUNT} tcp_user_timeout={}",
        KEEPALIVES_IDLE.as_secs(),
        KEEPALIVES_INTERVAL.as_secs(),
        TCP_USER_TIMEOUT.as_millis()
    )
}

/// Whom a connection is for: the target database as its owner, the
/// maintenance database as the admin role, or the target database as the
/// admin role (for what only it may do there: a subscription).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum As {
    Owner,
    Admin,
    AdminHere,
}

impl Target {
    pub(crate) fn role(&self, who: As) -> &str {
        match who {
            As::Admin | As::AdminHere => self.admin_user.as_deref().unwrap_or(&self.user),
            As::Owner => &self.user,
        }
    }

    pub(crate) fn database(&self, who: As) -> &str {
        match who {
            As::Admin => "postgres",
            As::Owner | As::AdminHere => &self.name,
        }
    }

    /// Who is connecting where, for messages.
    pub(crate) fn shown(&self, who: As) -> String {
        match who {
            As::Admin => format!("{} (admin role)", self.role(As::Admin)),
            As::AdminHere => format!("{} (admin role) in {}", self.role(As::Admin), self),
            As::Owner => self.to_string(),
        }
    }

    /// The password of `who`: the config's, else the passfile's (libpq's
    /// rules: the first line whose fields match, `*` matching anything).
    fn password(&self, who: As) -> anyhow::Result<Option<String>> {
        let given = match who {
            As::Admin | As::AdminHere if self.admin_user.is_some() => self.admin_password.as_ref(),
            _ => self.password.as_ref(),
        };
        if let Some(secret) = given {
            return Ok(Some(secret.expose().to_owned()));
        }
        let Some(path) = &self.passfile else { return Ok(None) };
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the passfile {path}"))?;
        let port = self.port.to_string();
        let wanted = [self.host.as_str(), port.as_str(), self.database(who), self.role(who)];
        Ok(text.lines().find_map(|line| passfile_match(line, &wanted)))
    }
}

/// The password of one passfile line if its four fields match `wanted`.
fn passfile_match(line: &str, wanted: &[&str; 4]) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    let [host, port, db, user, password] = <[String; 5]>::try_from(fields).ok()?;
    let matches = [host, port, db, user].iter().zip(wanted).all(|(field, want)| field == "*" || field == want);
    matches.then_some(password)
}

/// Opens a driver connection for `who`; its connection task runs on the
/// runtime until the client is dropped.
pub(crate) async fn connect(target: &Target, who: As) -> anyhow::Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .user(target.role(who))
        .dbname(target.database(who))
        .application_name("inmanta-migrate")
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVES_IDLE)
        .keepalives_interval(KEEPALIVES_INTERVAL)
        .keepalives_retries(KEEPALIVES_COUNT)
        .tcp_user_timeout(TCP_USER_TIMEOUT);
    if let Some(password) = target.password(who)? {
        config.password(password);
    }
    let mode = target.sslmode.as_deref().unwrap_or("prefer");
    let connected = if mode == "disable" {
        config.ssl_mode(SslMode::Disable);
        config.connect(tokio_postgres::NoTls).await.map(|(client, conn)| {
            tokio::spawn(conn);
            client
        })
    } else {
        config.ssl_mode(if matches!(mode, "allow" | "prefer") { SslMode::Prefer } else { SslMode::Require });
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(mode)?);
        config.connect(tls).await.map(|(client, conn)| {
            tokio::spawn(conn);
            client
        })
    };
    connected.map_err(|e| explain(target, who, &e).into())
}

/// The TLS client of one `sslmode`, verifying as libpq does: `verify-full`
/// the chain and the host name, `verify-ca` the chain, the others nothing
/// unless a root certificate file is there (then as `verify-ca`).
fn tls_config(mode: &str) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS for PostgreSQL")?;
    let chain = match root_certificates(mode)? {
        None => None,
        Some(roots) => Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .context("the root certificates for PostgreSQL")?,
        ),
    };
    let verifier: Arc<dyn ServerCertVerifier> = match chain {
        Some(webpki) if mode == "verify-full" => webpki,
        chain => Arc::new(Lenient { chain, provider }),
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

/// libpq's root certificates: `PGSSLROOTCERT`, else `~/.postgresql/root.crt`;
/// required for the verify modes, used by the others when present.
fn root_certificates(mode: &str) -> anyhow::Result<Option<rustls::RootCertStore>> {
    let path = std::env::var("PGSSLROOTCERT")
        .map(Utf8PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|home| Utf8PathBuf::from(home).join(".postgresql/root.crt")))
        .ok();
    let verify = mode.starts_with("verify-");
    let Some(path) = path.filter(|p| verify || p.exists()) else {
        if verify {
            bail!("sslmode {mode} needs root certificates: set PGSSLROOTCERT or put them in ~/.postgresql/root.crt");
        }
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(&path)
        .with_context(|| format!("cannot read the PostgreSQL root certificates {path}"))?;
    for certificate in certificates {
        let certificate = certificate.with_context(|| format!("{path} holds a certificate that cannot be read"))?;
        roots.add(certificate).with_context(|| format!("{path} holds a certificate that cannot be used"))?;
    }
    if roots.is_empty() {
        bail!("{path} holds no certificate");
    }
    Ok(Some(roots))
}

/// Below `verify-full`: the chain is checked when there are roots
/// (`verify-ca`), the host name never; the handshake's signatures always.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// An operator-facing reason for a failed connection or statement: what
/// PostgreSQL said (or why it could not be reached), as a failure of its
/// kind, with what to do where this knows better than the kind.
pub(crate) fn explain(target: &Target, who: As, error: &tokio_postgres::Error) -> Failure {
    let shown = target.shown(who);
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        let (kind, advice) = if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            (ErrorKind::DatabaseLogin, Some("check the database password in the config"))
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            (ErrorKind::DatabaseLogin, Some("check the database name"))
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE && who == As::Admin {
            (
                ErrorKind::Database,
                Some("set `admin_user` (and `admin_password`) to a role that may create and drop databases"),
            )
        } else if *code == SqlState::TOO_MANY_CONNECTIONS {
            (
                ErrorKind::DatabaseUnreachable,
                Some("PostgreSQL has no connection slot left: raise its `max_connections`, or stop what holds them"),
            )
        } else {
            (ErrorKind::Database, None)
        };
        let detail = db.detail().map(|d| format!(" ({})", d.replace('\n', "; "))).unwrap_or_default();
        let failure =
            Failure::new(kind, format!("PostgreSQL {shown}: {}{detail} (SQLSTATE {})", db.message(), code.code()));
        return match advice {
            Some(advice) => failure.advise(advice),
            None => failure,
        };
    }
    let text = error_chain(error);
    let (kind, advice) = match (tls_cause(error), io_cause(error)) {
        (
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )),
            _,
        ) => (
            ErrorKind::DatabaseTls,
            "the server's certificate does not name this host: set `host` to a name in the certificate \
                 (sslmode verify-full checks it; verify-ca does not)",
        ),
        (Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)), _) => (
            ErrorKind::DatabaseTls,
            "no CA in the root certificates (PGSSLROOTCERT, else ~/.postgresql/root.crt) signed the server's \
             certificate: point PGSSLROOTCERT at the CA that did",
        ),
        (Some(_), _) => (ErrorKind::DatabaseTls, "check `sslmode` and the root certificates (PGSSLROOTCERT)"),
        // The driver's own refusals carry no type of their own: its words.
        _ if text.contains("password missing") => {
            (ErrorKind::DatabaseLogin, "give the database password in the config (`password` or `passfile`)")
        }
        _ if text.contains("does not support TLS") => (
            ErrorKind::DatabaseTls,
            "the server speaks no TLS: check `sslmode` (prefer falls back to plain text, require does not)",
        ),
        (None, Some(_)) => (ErrorKind::DatabaseUnreachable, "is PostgreSQL running and reachable from here?"),
        (None, None) => return Failure::new(ErrorKind::Database, format!("PostgreSQL {shown}: {text}")),
    };
    Failure::new(kind, format!("PostgreSQL {shown}: {text}")).advise(advice)
}

/// The TLS failure under a driver error, when the handshake failed.
fn tls_cause(error: &tokio_postgres::Error) -> Option<&rustls::Error> {
    causes(error).find_map(|cause| {
        cause.downcast_ref::<rustls::Error>().or_else(|| {
            let inner = cause.downcast_ref::<io::Error>()?.get_ref()?;
            inner.downcast_ref::<rustls::Error>()
        })
    })
}

/// The I/O failure under a driver error: a refused, reset or timed-out
/// connection (the connect timeout is one too).
fn io_cause(error: &tokio_postgres::Error) -> Option<io::ErrorKind> {
    causes(error).find_map(|cause| cause.downcast_ref::<io::Error>().map(io::Error::kind))
}

fn causes(error: &tokio_postgres::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(error.source(), |&cause| cause.source())
}

/// An error and its causes on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passfile_lines_match_as_libpq_reads_them() {
        let want = ["db.example", "5432", "inmanta", "inmanta"];
        assert_eq!(passfile_match("*:*:*:inmanta:secret", &want).as_deref(), Some("secret"));
        assert_eq!(passfile_match("db.example:5432:inmanta:inmanta:a\\:b\\\\c", &want).as_deref(), Some("a:b\\c"));
        assert_eq!(passfile_match("*:*:*:inmanta:with:colons", &want).as_deref(), Some("with:colons"));
        assert_eq!(passfile_match("other:*:*:inmanta:x", &want), None);
        assert_eq!(passfile_match("*:5433:*:*:x", &want), None);
        assert_eq!(passfile_match("# *:*:*:*:x", &want), None);
        assert_eq!(passfile_match("*:*:*", &want), None);
    }
}
