//! Who is on the other end of a Kafka connection: SASL authentication
//! (SaslHandshake, then SaslAuthenticate until the mechanism is done) with
//! PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 on rsasl, credentials looked up
//! in a [`CredentialStore`], and KIP-368 re-authentication.
//!
//! Kafka's rules, which clients rely on: before a SASL listener has
//! authenticated a connection it answers only ApiVersions, SaslHandshake
//! and SaslAuthenticate, and closes the connection on anything else or on
//! a failed authentication (after answering SASL_AUTHENTICATION_FAILED);
//! frames before authentication are capped at
//! `sasl.server.max.receive.size`. With `connections.max.reauth.ms` the
//! session has a lifetime, told to the client in SaslAuthenticate; a
//! connection whose session ran out is closed at its next request unless it
//! re-authenticated, with the same mechanism and as the same principal.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use rsasl::callback::{Context, Request as CallbackRequest, SessionCallback, SessionData};
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::mechname::Mechname;
use rsasl::prelude::{SASLConfig, SASLServer, Session as SaslSession, SessionError, State};
use rsasl::property::{AuthId, AuthzId, Password};
use rsasl::validate::{Validate, Validation, ValidationError};
use runnel_common::scram::{Mechanism, ScramCredential};

/// Kafka's `KafkaPrincipal`: a type and a name, shown as `User:alice`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    /// The principal type (`User`).
    pub kind: String,
    /// The name within it.
    pub name: String,
}

impl Principal {
    /// `User:<name>`.
    pub fn user(name: impl Into<String>) -> Principal {
        Principal {
            kind: "User".into(),
            name: name.into(),
        }
    }

    /// `User:ANONYMOUS`, whom Kafka sees on a listener without authentication.
    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// Where SASL looks up users' credentials (the broker's copy of the
/// metadata log). Implementations are called on the connection's task and
/// must not block.
pub trait CredentialStore: Send + Sync + std::fmt::Debug + 'static {
    /// `user`'s SCRAM credential for `mechanism`, if there is one.
    fn scram(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential>;
}

/// The SASL mechanisms a listener can enable.
pub const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// SASL settings of a listener.
#[derive(Debug, Clone)]
pub struct SaslSettings {
    /// `sasl.enabled.mechanisms`, in the order SaslHandshake lists them.
    pub mechanisms: Vec<String>,
    /// Users' credentials.
    pub store: Arc<dyn CredentialStore>,
    /// `connections.max.reauth.ms`: how long an authentication holds
    /// (KIP-368); `None` for as long as the connection.
    pub max_reauth: Option<Duration>,
    /// `sasl.server.max.receive.size`: the largest frame before authentication.
    pub max_receive_size: usize,
}

impl SaslSettings {
    /// Settings with every mechanism enabled, no re-authentication, and
    /// Kafka's 512 KiB pre-authentication frame cap.
    pub fn new(store: Arc<dyn CredentialStore>) -> SaslSettings {
        SaslSettings {
            mechanisms: MECHANISMS.iter().map(|m| m.to_string()).collect(),
            store,
            max_reauth: None,
            max_receive_size: 524_288,
        }
    }
}

/// Kafka's error codes of the SASL APIs.
mod codes {
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
}

/// What rsasl hands back once a mechanism succeeded: the user's name.
struct Authenticated;
impl Validation for Authenticated {
    type Value = String;
}

/// rsasl's window on the credential store.
struct Callback {
    store: Arc<dyn CredentialStore>,
}

impl SessionCallback for Callback {
    fn callback(
        &self,
        session_data: &SessionData,
        context: &Context,
        request: &mut CallbackRequest<'_>,
    ) -> Result<(), SessionError> {
        if !request.is::<ScramStoredPassword>() {
            return Ok(());
        }
        let mechanism = Mechanism::from_name(session_data.mechanism().mechanism.as_str());
        let user = context.get_ref::<AuthId>();
        // An unknown user is left unsatisfied: rsasl then plays the
        // exchange to its end with made-up parameters and fails it, so the
        // answer does not tell which users exist.
        if let (Some(mechanism), Some(user)) = (mechanism, user)
            && let Some(c) = self.store.scram(user, mechanism)
        {
            request.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(
                c.iterations,
                &c.salt,
                &c.stored_key,
                &c.server_key,
            ))?;
        }
        Ok(())
    }

    fn validate(
        &self,
        session_data: &SessionData,
        context: &Context,
        validate: &mut Validate<'_>,
    ) -> Result<(), ValidationError> {
        let Some(user) = context.get_ref::<AuthId>() else {
            return Ok(());
        };
        // Kafka accepts an authorization id only when it names the user itself.
        if context
            .get_ref::<AuthzId>()
            .is_some_and(|z| !z.is_empty() && z != user)
        {
            return Ok(());
        }
        let passed = if session_data.mechanism().mechanism.as_str() == "PLAIN" {
            // PLAIN checks the password against the same SCRAM store.
            let password = context
                .get_ref::<Password>()
                .and_then(|p| std::str::from_utf8(p).ok());
            password.is_some_and(|password| {
                [Mechanism::ScramSha512, Mechanism::ScramSha256]
                    .into_iter()
                    .filter_map(|m| self.store.scram(user, m))
                    .any(|c| c.verify(password))
            })
        } else {
            // SCRAM validates only after rsasl has checked the client's proof.
            true
        };
        if passed {
            validate.finalize::<Authenticated>(user.to_string());
        }
        Ok(())
    }
}

/// Where a connection stands with SASL.
enum Stage {
    /// Waiting for SaslHandshake (the first time, or a re-authentication).
    Handshake,
    /// A mechanism chosen; SaslAuthenticate rounds until it finishes.
    Exchange {
        mechanism: String,
        session: Box<SaslSession<Authenticated>>,
        /// SaslAuthenticate rounds so far.
        rounds: u32,
    },
    /// Authenticated.
    Done,
}

/// What the connection does with a SASL request's answer.
pub struct Step<R> {
    /// The answer.
    pub response: R,
    /// Close the connection once the answer is written.
    pub close: bool,
}

/// A connection's SASL state.
pub struct Authenticator {
    settings: Arc<SaslSettings>,
    config: Arc<SASLConfig>,
    stage: Stage,
    /// Who authenticated, and with which mechanism (re-authentication must
    /// keep both).
    principal: Option<(Principal, String)>,
    /// When the current authentication runs out.
    expires: Option<Instant>,
}

/// Why a connection's SASL state cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("SASL cannot be set up: {0}")]
pub struct SetupError(String);

impl Authenticator {
    /// A connection that has not authenticated yet.
    pub fn new(settings: Arc<SaslSettings>) -> Result<Authenticator, SetupError> {
        let config = SASLConfig::builder()
            .with_default_mechanisms()
            .with_callback(Callback {
                store: Arc::clone(&settings.store),
            })
            .map_err(|e| SetupError(e.to_string()))?;
        Ok(Authenticator {
            settings,
            config,
            stage: Stage::Handshake,
            principal: None,
            expires: None,
        })
    }

    /// Who the connection authenticated as, once it has.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref().map(|(p, _)| p)
    }

    /// Whether requests other than the SASL ones may be served now: the
    /// connection authenticated and its session has not run out.
    pub fn may_serve(&self, now: Instant) -> bool {
        matches!(self.stage, Stage::Done) && self.expires.is_none_or(|e| now < e)
    }

    /// The largest frame to read now.
    pub fn max_receive_size(&self) -> Option<usize> {
        self.principal
            .is_none()
            .then_some(self.settings.max_receive_size)
    }

    /// Answers SaslHandshake.
    pub fn handshake(&mut self, r: &SaslHandshakeRequest) -> Step<SaslHandshakeResponse> {
        let enabled: Vec<StrBytes> = self
            .settings
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_string(m.clone()))
            .collect();
        let answer = |code: i16| {
            SaslHandshakeResponse::default()
                .with_error_code(code)
                .with_mechanisms(enabled.clone())
        };
        let reauthenticating = matches!(self.stage, Stage::Done);
        if matches!(self.stage, Stage::Exchange { .. }) {
            return Step {
                response: answer(codes::ILLEGAL_SASL_STATE),
                close: true,
            };
        }
        let asked = r.mechanism.as_str();
        let same = self.principal.as_ref().is_none_or(|(_, m)| m == asked);
        let known = self.settings.mechanisms.iter().any(|m| m == asked);
        if !known || !same {
            tracing::info!(
                mechanism = asked,
                reauthenticating,
                "SASL mechanism refused"
            );
            return Step {
                response: answer(codes::UNSUPPORTED_SASL_MECHANISM),
                close: true,
            };
        }
        let session = Mechname::parse(asked.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|name| {
                SASLServer::<Authenticated>::new(Arc::clone(&self.config))
                    .start_suggested(name)
                    .map_err(|e| e.to_string())
            });
        match session {
            Ok(session) => {
                self.stage = Stage::Exchange {
                    mechanism: asked.to_string(),
                    session: Box::new(session),
                    rounds: 0,
                };
                Step {
                    response: answer(0),
                    close: false,
                }
            }
            Err(e) => {
                tracing::error!(mechanism = asked, error = %e, "cannot start a SASL exchange");
                Step {
                    response: answer(codes::UNSUPPORTED_SASL_MECHANISM),
                    close: true,
                }
            }
        }
    }

    /// Answers SaslAuthenticate.
    pub fn authenticate(
        &mut self,
        r: &SaslAuthenticateRequest,
        now: Instant,
    ) -> Step<SaslAuthenticateResponse> {
        let Stage::Exchange {
            mechanism,
            mut session,
            rounds,
        } = std::mem::replace(&mut self.stage, Stage::Handshake)
        else {
            return failed(
                codes::ILLEGAL_SASL_STATE,
                "SaslAuthenticate without a SaslHandshake before it".into(),
            );
        };
        if mechanism.starts_with("SCRAM-") && !scram_fields_well_formed(&r.auth_bytes, rounds) {
            return invalid_credentials(&mechanism);
        }
        let mut out = Cursor::new(Vec::new());
        // A panic in the SASL library (hostile input it did not expect)
        // fails this authentication, not the listener.
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.step(Some(&r.auth_bytes), &mut out)
        }));
        let Ok(state) = stepped else {
            tracing::error!(
                mechanism,
                "the SASL library panicked on a client's message; authentication failed"
            );
            return invalid_credentials(&mechanism);
        };
        let token = bytes::Bytes::from(out.into_inner());
        match state {
            Ok(State::Running) => {
                self.stage = Stage::Exchange {
                    mechanism,
                    session,
                    rounds: rounds + 1,
                };
                Step {
                    response: SaslAuthenticateResponse::default().with_auth_bytes(token),
                    close: false,
                }
            }
            Ok(State::Finished(_)) => match session.validation() {
                Some(user) => {
                    let principal = Principal::user(user);
                    if let Some((before, _)) = &self.principal
                        && *before != principal
                    {
                        tracing::info!(%before, now = %principal, "re-authentication as another principal refused");
                        return failed(
                            codes::SASL_AUTHENTICATION_FAILED,
                            "re-authentication must keep the principal".into(),
                        );
                    }
                    tracing::debug!(%principal, mechanism, "SASL authentication succeeded");
                    self.principal = Some((principal, mechanism));
                    self.expires = self.settings.max_reauth.map(|d| now + d);
                    self.stage = Stage::Done;
                    let lifetime = self
                        .settings
                        .max_reauth
                        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                    Step {
                        response: SaslAuthenticateResponse::default()
                            .with_auth_bytes(token)
                            .with_session_lifetime_ms(lifetime),
                        close: false,
                    }
                }
                None => invalid_credentials(&mechanism),
            },
            Err(e) => {
                tracing::debug!(mechanism, error = %e, "SASL exchange failed");
                invalid_credentials(&mechanism)
            }
        }
    }
}

/// Whether a SCRAM client message has the shape rsasl 2.3's parser takes
/// for granted: its server-side parser slices the first two bytes of each
/// comma-separated attribute (and of a non-empty authzid) unchecked, and
/// panics on shorter ones (found by `fuzz/fuzz_targets/sasl_exchange.rs`).
/// The client-first message starts with the channel-binding flag (`n`,
/// `y`; rsasl checks it) and the authzid, which may be empty.
fn scram_fields_well_formed(message: &[u8], round: u32) -> bool {
    message
        .split(|b| *b == b',')
        .enumerate()
        .all(|(i, field)| match (round, i) {
            (0, 0) => true,
            (0, 1) => field.is_empty() || field.len() >= 2,
            _ => field.len() >= 2,
        })
}

/// Kafka's answer to wrong credentials (it names no user and no reason).
fn invalid_credentials(mechanism: &str) -> Step<SaslAuthenticateResponse> {
    metrics::counter!("runnel_kafka_authentication_failures_total", "mechanism" => mechanism.to_string()).increment(1);
    tracing::info!(mechanism, "SASL authentication failed");
    failed(
        codes::SASL_AUTHENTICATION_FAILED,
        format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
        ),
    )
}

fn failed(code: i16, message: String) -> Step<SaslAuthenticateResponse> {
    Step {
        response: SaslAuthenticateResponse::default()
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(message))),
        close: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rsasl::prelude::SASLClient;
    use std::collections::HashMap;

    #[derive(Debug, Default)]
    struct Store(HashMap<(String, Mechanism), ScramCredential>);

    impl CredentialStore for Store {
        fn scram(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
            self.0.get(&(user.to_string(), mechanism)).cloned()
        }
    }

    /// alice's credentials, made once (PBKDF2 is slow in a debug build).
    fn settings() -> Arc<SaslSettings> {
        static SETTINGS: std::sync::OnceLock<Arc<SaslSettings>> = std::sync::OnceLock::new();
        Arc::clone(SETTINGS.get_or_init(|| {
            let mut store = Store::default();
            for m in Mechanism::ALL {
                store.0.insert(
                    ("alice".into(), m),
                    ScramCredential::new(m, "wonderland", 4096).unwrap(),
                );
            }
            Arc::new(SaslSettings {
                max_reauth: Some(Duration::from_secs(60)),
                ..SaslSettings::new(Arc::new(store))
            })
        }))
    }

    /// Runs a whole exchange as rsasl's client with `user`/`password`.
    fn login(
        auth: &mut Authenticator,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> SaslAuthenticateResponse {
        let step = auth.handshake(
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_string(mechanism.into())),
        );
        assert_eq!(step.response.error_code, 0);
        let config = SASLConfig::with_credentials(None, user.into(), password.into()).unwrap();
        let name = Mechname::parse(mechanism.as_bytes()).unwrap();
        let mut client = SASLClient::new(config).start_suggested(&[name]).unwrap();
        let mut input: Option<bytes::Bytes> = None;
        loop {
            let mut out = Cursor::new(Vec::new());
            client.step(input.as_deref(), &mut out).unwrap();
            assert!(!out.get_ref().is_empty(), "the server decides first");
            let step = auth.authenticate(
                &SaslAuthenticateRequest::default().with_auth_bytes(out.into_inner().into()),
                Instant::now(),
            );
            if step.close || auth.may_serve(Instant::now()) {
                return step.response;
            }
            input = Some(step.response.auth_bytes);
        }
    }

    #[test]
    fn every_mechanism_authenticates_the_right_password_only() {
        for mechanism in MECHANISMS {
            let mut auth = Authenticator::new(settings()).unwrap();
            assert!(!auth.may_serve(Instant::now()));
            assert_eq!(auth.max_receive_size(), Some(524_288));
            let answer = login(&mut auth, mechanism, "alice", "wonderland");
            assert_eq!(answer.error_code, 0, "{mechanism}: {answer:?}");
            assert_eq!(answer.session_lifetime_ms, 60_000);
            assert_eq!(auth.principal(), Some(&Principal::user("alice")));
            assert!(auth.may_serve(Instant::now()));
            assert!(!auth.may_serve(Instant::now() + Duration::from_secs(61)));
            assert_eq!(auth.max_receive_size(), None);

            for (user, password) in [("alice", "wonder"), ("bob", "wonderland")] {
                let mut auth = Authenticator::new(settings()).unwrap();
                let answer = login(&mut auth, mechanism, user, password);
                assert_eq!(
                    answer.error_code,
                    codes::SASL_AUTHENTICATION_FAILED,
                    "{mechanism} {user}"
                );
                assert!(!auth.may_serve(Instant::now()));
                assert_eq!(auth.principal(), None);
            }
        }
    }

    #[test]
    fn reauthentication_keeps_mechanism_and_principal() {
        let mut auth = Authenticator::new(settings()).unwrap();
        assert_eq!(
            login(&mut auth, "SCRAM-SHA-512", "alice", "wonderland").error_code,
            0
        );
        assert_eq!(
            login(&mut auth, "SCRAM-SHA-512", "alice", "wonderland").error_code,
            0
        );
        let other = auth.handshake(
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        );
        assert_eq!(other.response.error_code, codes::UNSUPPORTED_SASL_MECHANISM);
        assert!(other.close);
    }

    proptest::proptest! {
        /// Hostile SASL traffic (any mechanism name, any tokens, in any
        /// order) never panics, never authenticates, and every refusal
        /// closes the connection.
        #[test]
        fn garbage_never_authenticates(
            steps in proptest::collection::vec(
                (proptest::option::of(0usize..5), proptest::collection::vec(proptest::num::u8::ANY, 0..200)),
                1..8,
            )
        ) {
            let names = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", ""];
            let mut auth = Authenticator::new(settings()).unwrap();
            for (mechanism, token) in steps {
                let closed = match mechanism {
                    Some(i) => auth
                        .handshake(&SaslHandshakeRequest::default()
                            .with_mechanism(StrBytes::from_static_str(names[i])))
                        .close,
                    None => auth
                        .authenticate(
                            &SaslAuthenticateRequest::default().with_auth_bytes(token.into()),
                            Instant::now(),
                        )
                        .close,
                };
                proptest::prop_assert!(!auth.may_serve(Instant::now()));
                if closed {
                    break;
                }
            }
        }
    }

    #[test]
    fn short_scram_attributes_fail_without_a_panic() {
        // The fuzzer's find: rsasl's parser sliced "." as if it were "a=...".
        for (first, second) in [
            (&b"p=2,."[..], None),
            (b"n,,n=alice,r=abc", Some(&b"c=biws,r"[..])),
            (b"n,,n,r=abc", None),
            (b"n,a,n=alice,r=abc", None),
        ] {
            let mut auth = Authenticator::new(settings()).unwrap();
            auth.handshake(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-512")),
            );
            let mut step = auth.authenticate(
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(first)),
                Instant::now(),
            );
            if let Some(second) = second {
                assert!(!step.close, "a well-formed first message goes on");
                step = auth.authenticate(
                    &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(second)),
                    Instant::now(),
                );
            }
            assert_eq!(step.response.error_code, codes::SASL_AUTHENTICATION_FAILED);
            assert!(step.close);
        }
    }

    #[test]
    fn unknown_mechanisms_and_out_of_order_requests_are_refused() {
        let mut auth = Authenticator::new(settings()).unwrap();
        let step = auth.authenticate(&SaslAuthenticateRequest::default(), Instant::now());
        assert_eq!(step.response.error_code, codes::ILLEGAL_SASL_STATE);
        assert!(step.close);
        let step = auth.handshake(
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI")),
        );
        assert_eq!(step.response.error_code, codes::UNSUPPORTED_SASL_MECHANISM);
        assert_eq!(step.response.mechanisms.len(), 3);
        // Garbage in the exchange fails it, nothing more.
        let mut auth = Authenticator::new(settings()).unwrap();
        auth.handshake(
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256")),
        );
        let step = auth.authenticate(
            &SaslAuthenticateRequest::default()
                .with_auth_bytes(bytes::Bytes::from_static(b"\xff\x00garbage")),
            Instant::now(),
        );
        assert_eq!(step.response.error_code, codes::SASL_AUTHENTICATION_FAILED);
        assert!(step.close);
    }
}
