//! Connecting: a NATS client with clear errors and one TLS crypto provider.
//!
//! async-nats builds its TLS configuration from rustls's process-wide crypto provider. When a
//! program compiles in two providers (another dependency enabling rustls's `aws-lc-rs` next to
//! the `ring` this crate uses), rustls cannot choose and the first TLS connection panics.
//! [`connect`] therefore installs `ring` as the process default when none is installed yet, so
//! any build that links this crate gets a working TLS setup.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, ServerAddr};

use crate::NatsError;

/// How long [`connect`] waits for a server to answer before reporting it unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `url` (`nats://host:port`, or several separated by commas) with the default
/// options: reconnects for ever after the first connection, [`CONNECT_TIMEOUT`] per attempt.
/// A server that cannot be reached gives [`NatsError::Unreachable`] naming the address.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), weir_nats::NatsError> {
/// let client = weir_nats::connect("nats://127.0.0.1:4222").await?;
/// let jetstream = async_nats::jetstream::new(client);
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<Client, NatsError> {
    connect_with(
        url,
        ConnectOptions::new().connection_timeout(CONNECT_TIMEOUT),
    )
    .await
}

/// [`connect`] with the caller's options (credentials, TLS, a client name...).
pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Client, NatsError> {
    install_crypto_provider();
    let addresses = url
        .split(',')
        .map(|one| {
            one.trim()
                .parse::<ServerAddr>()
                .map_err(|source| NatsError::BadAddress {
                    url: one.to_owned(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    options
        .connect(addresses.as_slice())
        .await
        .map_err(|source| NatsError::Unreachable {
            url: url.to_owned(),
            source,
        })
}

/// Makes `ring` rustls's process-wide crypto provider unless one is installed already (then
/// that one stays: the program chose it).
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connecting_installs_the_crypto_provider_tls_needs() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = connect(&format!("nats://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert!(matches!(error, NatsError::Unreachable { .. }));
        // What async-nats does for a TLS connection; it panics when rustls has no default
        // provider and more than one compiled in.
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        let _config = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let error = connect("nats://127.0.0.1:notaport").await.unwrap_err();
        assert!(matches!(error, NatsError::BadAddress { .. }), "{error}");
    }
}
