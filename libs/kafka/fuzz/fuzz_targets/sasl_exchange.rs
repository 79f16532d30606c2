//! Arbitrary bytes as one connection's SASL conversation: steps of a tag
//! byte (SaslHandshake with a mechanism name, or SaslAuthenticate with a
//! token), a length byte and that many bytes, against a store holding one
//! user's SCRAM credentials.
//!
//! Properties: nothing panics; once a step says close, the connection is
//! done (the listener closes it); the connection may serve requests only
//! once it authenticated, and then as the one user the store knows.

#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use runnel_common::scram::{Mechanism, ScramCredential};
use runnel_kafka::auth::{Authenticator, CredentialStore, Principal, SaslSettings};
use runnel_kafka::kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use runnel_kafka::kafka_protocol::protocol::StrBytes;

#[derive(Debug)]
struct Store(HashMap<Mechanism, ScramCredential>);

impl CredentialStore for Store {
    fn scram(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
        (user == "alice").then(|| self.0.get(&mechanism).cloned()).flatten()
    }
}

fn settings() -> Arc<SaslSettings> {
    static SETTINGS: OnceLock<Arc<SaslSettings>> = OnceLock::new();
    Arc::clone(SETTINGS.get_or_init(|| {
        let store = Store(
            Mechanism::ALL
                .into_iter()
                .map(|m| (m, ScramCredential::new(m, "wonderland", 4096).expect("a credential")))
                .collect(),
        );
        Arc::new(SaslSettings::new(Arc::new(store)))
    }))
}

fuzz_target!(|data: &[u8]| {
    let mut auth = Authenticator::new(settings()).expect("SASL sets up");
    let mut input = data;
    while let Some((&tag, rest)) = input.split_first() {
        let len = usize::from(rest.first().copied().unwrap_or(0)).min(rest.len().saturating_sub(1));
        let body = rest.get(1..1 + len).unwrap_or(&[]);
        input = rest.get(1 + len..).unwrap_or(&[]);
        let close = if tag % 4 == 0 {
            let mechanism = String::from_utf8_lossy(body).into_owned();
            auth.handshake(&SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism)))
                .close
        } else {
            auth.authenticate(
                &SaslAuthenticateRequest::default().with_auth_bytes(body.to_vec().into()),
                Instant::now(),
            )
            .close
        };
        if auth.may_serve(Instant::now()) {
            assert_eq!(auth.principal(), Some(&Principal::user("alice")));
        }
        if close {
            break;
        }
    }
});
