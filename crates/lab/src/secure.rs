//! Auth and TLS of a secure lab instance: a self-signed CA, a server
//! certificate for 127.0.0.1/localhost signed by it, an HS256 JWT signing key
//! shared by the OLD and the NEW server (a real migration keeps the
//! `[auth_jwt_*]` section), and API tokens signed with it.
//!
//! Certificates come from `rcgen` and tokens are computed here (HMAC-SHA256),
//! so no `openssl` or Python is needed.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

/// Bytes of a generated JWT signing key (inmanta wants at least 32).
const JWT_KEY_BYTES: usize = 48;
/// Lifetime of the API tokens the lab writes for the tool.
pub(crate) const TOKEN_LIFETIME_SECS: i64 = 365 * 24 * 3600;

/// The `[auth_jwt_default]` claims of a secure instance: the same on both sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtClaims {
    pub issuer: String,
    pub audience: String,
}

impl JwtClaims {
    pub(crate) fn for_instance(name: &str) -> JwtClaims {
        let issuer = format!("https://inmanta-migrate-lab.invalid/{name}/");
        JwtClaims { audience: issuer.clone(), issuer }
    }
}

/// What [`crate::Instance::mint_token`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An unscoped `api` token, valid for a year (like the ones the lab writes).
    Valid,
    /// Like `Valid`, but its `exp` lies an hour in the past.
    Expired,
    /// Like `Valid`, but signed with another (random) key.
    WrongKey,
}

/// PEM texts of a CA and of a server certificate it signed.
pub(crate) struct Pki {
    pub ca_cert: String,
    pub ca_key: String,
    pub server_cert: String,
    pub server_key: String,
}

fn ca_params(common_name: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "inmanta-migrate lab");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// A self-signed CA: (certificate PEM, key pair).
fn new_ca(common_name: &str) -> Result<(String, CertificateParams, KeyPair)> {
    let key = KeyPair::generate().context("generating a CA key")?;
    let params = ca_params(common_name)?;
    let cert = params.self_signed(&key).context("self-signing the CA certificate")?;
    Ok((cert.pem(), params, key))
}

/// The PEM certificate of a fresh self-signed CA that signed nothing the lab
/// uses: for tests of a wrong `ca_file`.
pub fn unrelated_ca_pem(common_name: &str) -> Result<String> {
    Ok(new_ca(common_name)?.0)
}

/// A CA and a server certificate for `127.0.0.1`, `::1` and `localhost`.
pub(crate) fn generate_pki(instance: &str) -> Result<Pki> {
    generate_pki_for(instance, &["127.0.0.1", "::1", "localhost"])
}

/// A CA and a server certificate for `names` only (host names or
/// addresses; the first is also its common name).
pub(crate) fn generate_pki_for(instance: &str, names: &[&str]) -> Result<Pki> {
    let (ca_cert, ca_params, ca_key) = new_ca(&format!("inmanta-migrate lab CA ({instance})"))?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.distinguished_name.push(DnType::OrganizationName, "inmanta-migrate lab");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().context("generating the server key")?;
    let cert = params.signed_by(&key, &issuer).context("signing the server certificate")?;
    Ok(Pki { ca_cert, ca_key: ca_key_pem, server_cert: cert.pem(), server_key: key.serialize_pem() })
}

/// A random HS256 key, base64url without padding (the `key` of an
/// `[auth_jwt_*]` section).
pub(crate) fn gen_jwt_key() -> Result<String> {
    let mut key = [0u8; JWT_KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no random bytes for a JWT key: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(key))
}

/// The bytes of an `[auth_jwt_*]` key (inmanta decodes it as base64url and
/// tolerates padding).
pub(crate) fn decode_jwt_key(key: &str) -> Result<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(key.trim().trim_end_matches('=')).context("the JWT key is not base64url")?;
    if bytes.len() < 32 {
        bail!("the JWT key has {} bytes; HS256 needs at least 32", bytes.len());
    }
    Ok(bytes)
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// An HS256 JWT as inmanta's `encode_token` makes one: `iss`, `aud` (a
/// list), `urn:inmanta:ct` (comma-separated client types), `iat`, `exp`,
/// plus `sub`.
pub(crate) fn sign_token(
    key: &[u8],
    claims: &JwtClaims,
    subject: &str,
    client_types: &[&str],
    iat: i64,
    exp: i64,
) -> Result<String> {
    let header = json!({ "alg": "HS256", "typ": "JWT" });
    let payload = json!({
        "iss": claims.issuer,
        "aud": [claims.audience],
        "sub": subject,
        "urn:inmanta:ct": client_types.join(","),
        "iat": iat,
        "exp": exp,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload)?)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| anyhow::anyhow!("HMAC key: {e}"))?;
    mac.update(signing_input.as_bytes());
    let signature = mac.finalize().into_bytes();
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// A token of `kind` for `claims`, signed with `key` (or another one).
pub(crate) fn mint(key: &[u8], claims: &JwtClaims, subject: &str, kind: TokenKind) -> Result<String> {
    let now = now_unix();
    match kind {
        TokenKind::Valid => sign_token(key, claims, subject, &["api"], now, now + TOKEN_LIFETIME_SECS),
        TokenKind::Expired => sign_token(key, claims, subject, &["api"], now - 7200, now - 3600),
        TokenKind::WrongKey => {
            let other = decode_jwt_key(&gen_jwt_key()?)?;
            sign_token(&other, claims, subject, &["api"], now, now + TOKEN_LIFETIME_SECS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hs256_jwts_with_inmanta_claims() {
        let key = decode_jwt_key(&gen_jwt_key().unwrap()).unwrap();
        assert_eq!(key.len(), JWT_KEY_BYTES);
        let claims = JwtClaims::for_instance("x");
        let token = mint(&key, &claims, "lab", TokenKind::Valid).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        let payload: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["iss"], claims.issuer.as_str());
        assert_eq!(payload["aud"], json!([claims.audience]));
        assert_eq!(payload["urn:inmanta:ct"], "api");
        assert!(payload["exp"].as_i64().unwrap() > now_unix() + 300 * 24 * 3600);
        // The signature checks out with the key, and not with another one.
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let wrong = mint(&key, &claims, "lab", TokenKind::WrongKey).unwrap();
        let wparts: Vec<&str> = wrong.split('.').collect();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}", wparts[0], wparts[1]).as_bytes());
        assert!(mac.verify_slice(&URL_SAFE_NO_PAD.decode(wparts[2]).unwrap()).is_err());
        let expired = mint(&key, &claims, "lab", TokenKind::Expired).unwrap();
        let p: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(expired.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert!(p["exp"].as_i64().unwrap() < now_unix());
    }

    #[test]
    fn known_hs256_vector() {
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex = hex::encode(mac.finalize().into_bytes());
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(decode_jwt_key(&URL_SAFE_NO_PAD.encode([1u8; 16])).is_err());
        assert!(decode_jwt_key("not base64!").is_err());
        // Padding is tolerated, as inmanta does.
        assert_eq!(decode_jwt_key(&format!("{}=", URL_SAFE_NO_PAD.encode([7u8; 32]))).unwrap(), vec![7u8; 32]);
    }

    #[test]
    fn pki_is_pem_and_the_ca_verifies_the_server_certificate() {
        let pki = generate_pki("t").unwrap();
        assert!(pki.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.server_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.server_key.contains("PRIVATE KEY"));
        assert!(pki.ca_key.contains("PRIVATE KEY"));
        assert_ne!(pki.ca_cert, unrelated_ca_pem("other").unwrap());
        // reqwest parses both (what the lab's client and the tool do).
        assert_eq!(reqwest::Certificate::from_pem_bundle(pki.ca_cert.as_bytes()).unwrap().len(), 1);
    }
}
