//! One TLS stack for the whole process: rustls with the ring provider, shared
//! by reqwest (HTTP APIs) and lettre (SMTP). No OpenSSL, no aws-lc C build.

/// Installs ring as the process-wide rustls crypto provider.
///
/// reqwest is built with `rustls-no-provider`, so **every** `reqwest::Client`
/// build panics until a provider is installed: call this once at start-up
/// (the outbox constructors call it too). Calling it again, or after another
/// provider was installed, does nothing.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn installing_twice_is_harmless_and_clients_build() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        assert!(reqwest::Client::builder().build().is_ok());
    }
}
