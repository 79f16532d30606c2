//! Arbitrary bytes as what a client sends a TLS listener, in two modes
//! chosen by the first byte:
//!
//! - even: the rest is the client's side of a connection, fed to the
//!   server side of a handshake with the listeners' own config (ring, TLS
//!   1.2 and 1.3, ALPN, client certificates requested and verified against
//!   a CA) in pieces, as a network delivers them;
//! - odd: the rest is a client certificate (DER) whose subject becomes a
//!   principal: its RFC 2253 name, then `ssl.principal.mapping.rules`.
//!
//! Properties: nothing panics; a handshake stops at the first fatal error
//! and never asks for more than the input once it is used up; a name that
//! comes out is mapped by every rule without error.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use runnel_common::certs::DevCa;
use runnel_common::tls::{ClientAuth, PrincipalMapper, ReloadingTls, TlsFiles, subject_name};
use rustls::pki_types::CertificateDer;

/// The server config the listeners use, from a throwaway CA's files.
fn config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("runnel-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let ca = DevCa::new("fuzz CA").expect("a CA");
        std::fs::write(dir.join("ca.pem"), ca.ca_pem()).expect("the CA file");
        std::fs::write(
            dir.join("server.pem"),
            ca.server_keystore(&["localhost"]).expect("a certificate"),
        )
        .expect("the keystore");
        let tls = ReloadingTls::load(TlsFiles {
            keystore: dir.join("server.pem"),
            truststore: Some(dir.join("ca.pem")),
            client_auth: ClientAuth::Requested,
            alpn: vec![b"h2".to_vec()],
        })
        .expect("the listener's config");
        tls.config()
    }))
}

fn mappers() -> &'static [PrincipalMapper] {
    static MAPPERS: OnceLock<Vec<PrincipalMapper>> = OnceLock::new();
    MAPPERS.get_or_init(|| {
        [
            "DEFAULT",
            "RULE:^CN=([^,]+)$/$1/,DEFAULT",
            "RULE:^CN=(.*?),OU=(.*?),O=.*$/$1@$2/L, RULE:^CN=(.*)$/$1/U, DEFAULT",
        ]
        .iter()
        .map(|r| PrincipalMapper::parse(r).expect("a rule"))
        .collect()
    })
}

fn handshake(input: &[u8]) {
    let Ok(mut conn) = rustls::ServerConnection::new(config()) else {
        return;
    };
    let mut input = input;
    let mut out = Vec::new();
    // Pieces of at most 300 bytes: records split across reads.
    while !input.is_empty() {
        let (piece, rest) = input.split_at(input.len().min(300));
        input = rest;
        let mut piece = piece;
        while !piece.is_empty() {
            match conn.read_tls(&mut piece) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if conn.process_new_packets().is_err() {
                // The alert the server sends before it closes.
                let _ = conn.write_tls(&mut out);
                return;
            }
            while conn.wants_write() {
                if conn.write_tls(&mut out).is_err() {
                    return;
                }
            }
        }
    }
    if !conn.is_handshaking() {
        if let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) {
            principal(cert);
        }
    }
}

fn principal(cert: &CertificateDer<'_>) {
    if let Some(name) = subject_name(cert) {
        for mapper in mappers() {
            let _ = mapper.map(&name);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        handshake(rest);
    } else {
        principal(&CertificateDer::from(rest));
    }
});
