//! HTTPS and mutual TLS, black-box through the real gateway on 127.0.0.1:0.
//! Every certificate is made here with `rcgen`: a CA, a server certificate
//! (SAN 127.0.0.1 and localhost), good client certificates, one from another
//! CA and an expired one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use portcullis::config::{Config, ConfigSource};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

// ------------------------------------------------------------------ the PKI

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate; returns (certificate PEM, key PEM).
    fn leaf(&self, spec: Leaf) -> Pem {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = spec.cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = spec.sans;
        params.extended_key_usages = vec![spec.usage];
        params.use_authority_key_identifier_extension = true;
        if spec.expired {
            params.not_before = OffsetDateTime::now_utc() - time::Duration::days(30);
            params.not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
        }
        let key = KeyPair::generate().unwrap();
        let issuer: &Issuer<'_, KeyPair> = &self.issuer;
        let cert = params.signed_by(&key, issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self) -> Pem {
        self.leaf(Leaf {
            sans: vec![
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::DnsName("localhost".try_into().unwrap()),
            ],
            cn: Some("portcullis test server"),
            usage: ExtendedKeyUsagePurpose::ServerAuth,
            expired: false,
        })
    }

    /// SANs: an IP (skipped), then the URI, then a DNS name; CN `app-cn`.
    fn good_client(&self) -> Pem {
        self.leaf(Leaf {
            sans: vec![
                SanType::IpAddress("10.0.0.7".parse().unwrap()),
                SanType::URI("spiffe://example/ns/app".try_into().unwrap()),
                SanType::DnsName("app.internal".try_into().unwrap()),
            ],
            cn: Some("app-cn"),
            usage: ExtendedKeyUsagePurpose::ClientAuth,
            expired: false,
        })
    }

    fn client(&self, sans: Vec<SanType>, cn: Option<&str>, expired: bool) -> Pem {
        self.leaf(Leaf {
            sans,
            cn,
            usage: ExtendedKeyUsagePurpose::ClientAuth,
            expired,
        })
    }
}

struct Leaf<'a> {
    sans: Vec<SanType>,
    cn: Option<&'a str>,
    usage: ExtendedKeyUsagePurpose,
    expired: bool,
}

#[derive(Clone)]
struct Pem {
    cert: String,
    key: String,
}

/// The files the gateway reads: written before it starts, rewritten for reloads.
struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Files {
    fn new(server: &Pem, client_ca: &Ca) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let f = Files {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            ca: dir.path().join("clients-ca.pem"),
            _dir: dir,
        };
        f.write_server(server);
        std::fs::write(&f.ca, client_ca.pem()).unwrap();
        f
    }

    fn write_server(&self, server: &Pem) {
        std::fs::write(&self.cert, &server.cert).unwrap();
        std::fs::write(&self.key, &server.key).unwrap();
    }

    /// The `tls:` section; `extra` lines are indented under it.
    fn yaml(&self, mtls: bool, extra: &[&str]) -> String {
        let mut y = format!(
            "tls:\n  cert: {}\n  key: {}\n",
            self.cert.display(),
            self.key.display()
        );
        if mtls {
            y.push_str(&format!("  client_ca: {}\n", self.ca.display()));
        }
        for l in extra {
            y.push_str(&format!("  {l}\n"));
        }
        y
    }
}

/// An HTTPS client trusting only `roots`, presenting `identity` if given.
fn client(roots: &[&Ca], identity: Option<&Pem>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10));
    for ca in roots {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
    }
    if let Some(id) = identity {
        let pem = format!("{}{}", id.key, id.cert);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn start(top: String) -> Harness {
    Harness::start_with(Opts {
        top_extra: top,
        ..Default::default()
    })
    .await
}

async fn chat(
    h: &Harness,
    c: &reqwest::Client,
    key: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut req = c
        .post(format!("{}/v1/chat/completions", h.url))
        .json(&chat_body("gpt-4o-mini"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await
}

/// Creates a gateway key through the admin API with client `c`.
async fn create_key(h: &Harness, c: &reqwest::Client) -> String {
    let resp = c
        .post(format!("{}/admin/keys", h.url))
        .bearer_auth(MASTER)
        .json(&json!({"name": "k", "user": "alice", "team": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    v["key"].as_str().unwrap().to_owned()
}

/// The ledger's record of a successful response.
async fn ledger_of(h: &Harness, resp: reqwest::Response) -> portcullis::store::UsageRecord {
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let _ = resp.bytes().await.unwrap();
    h.usage_record(&rid).await
}

// ------------------------------------------------------------------- tests

#[tokio::test]
async fn https_serves_h1_and_h2_and_a_silent_client_blocks_nobody() {
    let ca = Ca::new("Test CA");
    let files = Files::new(&ca.server(), &ca);
    let h = start(files.yaml(false, &[])).await;
    assert!(h.url.starts_with("https://127.0.0.1:"), "{}", h.url);

    // A client that connects and says nothing must not hold up the accept loop.
    let _silent = tokio::net::TcpStream::connect(h.gw.addr).await.unwrap();

    let c = client(&[&ca], None);
    let key = create_key(&h, &c).await;
    let rec = ledger_of(&h, chat(&h, &c, Some(&key)).await.unwrap()).await;
    assert_eq!(rec.user.as_deref(), Some("alice"));

    // Without a credential it is still deny-by-default.
    let resp = chat(&h, &c, None).await.unwrap();
    assert_error(resp, 401, "invalid_api_key").await;

    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", h.gw.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    // ALPN offers h2, and a request over h2 works.
    let tls = tls_connect(h.gw.addr, &ca, &[b"h2".to_vec(), b"http/1.1".to_vec()]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://127.0.0.1:{}/healthz", h.gw.addr.port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);

    let tls = tls_connect(h.gw.addr, &ca, &[b"http/1.1".to_vec()]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    h.stop().await;
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    ca: &Ca,
    alpn: &[Vec<u8>],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.to_vec();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn mtls_required_maps_the_san_and_refuses_bad_certificates_in_the_handshake() {
    let ca = Ca::new("Test CA");
    let other = Ca::new("Other CA");
    let files = Files::new(&ca.server(), &ca);
    let h = start(files.yaml(true, &[])).await;
    let good = ca.good_client();

    // Good certificate, no header: the first DNS/URI SAN is the user.
    let c = client(&[&ca], Some(&good));
    let rec = ledger_of(&h, chat(&h, &c, None).await.unwrap()).await;
    assert_eq!(rec.user.as_deref(), Some("spiffe://example/ns/app"));
    assert!(
        rec.key_id.as_deref().unwrap().starts_with("cert:"),
        "{rec:?}"
    );
    assert_eq!(rec.key_id.as_deref().unwrap().len(), "cert:".len() + 16);
    let models = c.get(format!("{}/v1/models", h.url)).send().await.unwrap();
    assert_eq!(models.status(), 200);

    // The certificate user became a user record (so it can be disabled).
    let users: Value = c
        .get(format!("{}/admin/users", h.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        users.to_string().contains("spiffe://example/ns/app"),
        "{users}"
    );

    // Disabling that user shuts the certificate out (403), from the next request on.
    let resp = c
        .patch(format!(
            "{}/admin/users/spiffe%3A%2F%2Fexample%2Fns%2Fapp",
            h.url
        ))
        .bearer_auth(MASTER)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = chat(&h, &c, None).await.unwrap();
    assert_error(resp, 403, "user_disabled").await;

    // A certificate never opens the admin API by itself.
    let resp = c.get(format!("{}/admin/keys", h.url)).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    // A DNS-only certificate: that name.
    let dns = ca.client(
        vec![SanType::DnsName("app.internal".try_into().unwrap())],
        None,
        false,
    );
    let rec = ledger_of(
        &h,
        chat(&h, &client(&[&ca], Some(&dns)), None).await.unwrap(),
    )
    .await;
    assert_eq!(rec.user.as_deref(), Some("app.internal"));

    // A credential header wins over the certificate: a valid key acts for its
    // own user, a bad one is refused (no fallback to the certificate).
    let key = create_key(&h, &c).await;
    let rec = ledger_of(&h, chat(&h, &c, Some(&key)).await.unwrap()).await;
    assert_eq!(rec.user.as_deref(), Some("alice"));
    let before = h.mock.request_count();
    let resp = chat(&h, &c, Some("not-a-real-credential")).await.unwrap();
    assert_error(resp, 401, "invalid_api_key").await;

    // Another CA, an expired certificate, no certificate: the handshake fails.
    let foreign = other.good_client();
    let expired = ca.client(
        vec![SanType::URI("spiffe://example/ns/app".try_into().unwrap())],
        Some("app-cn"),
        true,
    );
    for (what, id) in [
        ("other CA", Some(&foreign)),
        ("expired", Some(&expired)),
        ("none", None),
    ] {
        let c = client(&[&ca], id);
        let r = chat(&h, &c, Some(&key)).await;
        assert!(
            r.is_err(),
            "{what}: expected a refused handshake, got {r:?}"
        );
    }
    assert_eq!(h.mock.request_count(), before, "nothing may be forwarded");
    h.stop().await;
}

#[tokio::test]
async fn mtls_cn_identity() {
    let ca = Ca::new("Test CA");
    let files = Files::new(&ca.server(), &ca);
    let h = start(files.yaml(true, &["client_identity: cn"])).await;
    let c = client(&[&ca], Some(&ca.good_client()));
    let rec = ledger_of(&h, chat(&h, &c, None).await.unwrap()).await;
    assert_eq!(rec.user.as_deref(), Some("app-cn"));

    // Without a CN there is no identity: 401, nothing forwarded.
    let before = h.mock.request_count();
    let no_cn = ca.client(
        vec![SanType::DnsName("x.internal".try_into().unwrap())],
        None,
        false,
    );
    let resp = chat(&h, &client(&[&ca], Some(&no_cn)), None).await.unwrap();
    assert_error(resp, 401, "invalid_api_key").await;
    assert_eq!(h.mock.request_count(), before);
    h.stop().await;
}

#[tokio::test]
async fn mtls_optional_falls_back_to_credentials() {
    let ca = Ca::new("Test CA");
    let other = Ca::new("Other CA");
    let files = Files::new(&ca.server(), &ca);
    let h = start(files.yaml(true, &["client_cert: optional"])).await;

    let good = client(&[&ca], Some(&ca.good_client()));
    let rec = ledger_of(&h, chat(&h, &good, None).await.unwrap()).await;
    assert_eq!(rec.user.as_deref(), Some("spiffe://example/ns/app"));

    let key = create_key(&h, &client(&[&ca], None)).await;
    let foreign = other.good_client();
    let expired = ca.client(
        vec![SanType::URI("spiffe://example/ns/app".try_into().unwrap())],
        None,
        true,
    );
    for (what, id) in [
        ("other CA", Some(&foreign)),
        ("expired", Some(&expired)),
        ("none", None),
    ] {
        let c = client(&[&ca], id);
        // No credential: 401, nothing forwarded.
        let before = h.mock.request_count();
        let resp = chat(&h, &c, None)
            .await
            .unwrap_or_else(|e| panic!("{what}: the handshake must succeed in optional mode: {e}"));
        assert_error(resp, 401, "invalid_api_key").await;
        assert_eq!(
            h.mock.request_count(),
            before,
            "{what}: nothing may be forwarded"
        );
        // With a key: the key's user; an unverified certificate names nobody.
        let rec = ledger_of(&h, chat(&h, &c, Some(&key)).await.unwrap()).await;
        assert_eq!(rec.user.as_deref(), Some("alice"), "{what}");
    }
    h.stop().await;
}

#[tokio::test]
async fn reload_swaps_the_server_certificate_and_keeps_open_connections() {
    let ca1 = Ca::new("CA one");
    let ca2 = Ca::new("CA two");
    let files = Files::new(&ca1.server(), &ca1);
    let h = start(files.yaml(false, &[])).await;

    // One client, one kept-alive connection, trusting only the old CA.
    let old = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca1.pem().as_bytes()).unwrap())
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Duration::from_secs(60))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let health = |c: &reqwest::Client| c.get(format!("{}/healthz", h.url)).send();
    assert_eq!(health(&old).await.unwrap().status(), 200);

    files.write_server(&ca2.server());
    h.gw.reload_tls().unwrap();

    // New handshakes get the new certificate.
    assert_eq!(health(&client(&[&ca2], None)).await.unwrap().status(), 200);
    assert!(health(&client(&[&ca1], None)).await.is_err());
    // The connection opened before the reload still works (a new one could
    // not: this client trusts only the old CA).
    for _ in 0..3 {
        assert_eq!(health(&old).await.unwrap().status(), 200);
    }
    h.stop().await;
}

#[tokio::test]
async fn a_broken_file_on_reload_keeps_the_old_certificate() {
    let ca = Ca::new("Test CA");
    let other = Ca::new("Other CA");
    let files = Files::new(&ca.server(), &ca);
    let h = start(files.yaml(true, &[])).await;
    let c = || client(&[&ca], Some(&ca.good_client()));
    let health = |c: reqwest::Client| {
        let url = format!("{}/healthz", h.url);
        async move { c.get(url).send().await }
    };

    std::fs::write(
        &files.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    )
    .unwrap();
    let e = h.gw.reload_tls().unwrap_err();
    assert_eq!(e.field, "cert", "{e}");
    assert_eq!(health(c()).await.unwrap().status(), 200);

    // A certificate that does not match the key is refused too.
    std::fs::write(&files.cert, other.server().cert).unwrap();
    let e = h.gw.reload_tls().unwrap_err();
    assert_eq!(e.field, "key", "{e}");
    // So is an empty client CA file.
    files.write_server(&ca.server());
    std::fs::write(&files.ca, "").unwrap();
    let e = h.gw.reload_tls().unwrap_err();
    assert_eq!(e.field, "client_ca", "{e}");
    assert_eq!(health(c()).await.unwrap().status(), 200);

    // A client CA rotation: after a good reload, the new CA's clients get in
    // and the old one's do not.
    std::fs::write(&files.ca, other.pem()).unwrap();
    h.gw.reload_tls().unwrap();
    let rec = ledger_of(
        &h,
        chat(&h, &client(&[&ca], Some(&other.good_client())), None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(rec.user.as_deref(), Some("spiffe://example/ns/app"));
    assert!(health(c()).await.is_err());
    h.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_certificates() {
    let ca1 = Ca::new("CA one");
    let ca2 = Ca::new("CA two");
    let files = Files::new(&ca1.server(), &ca1);
    // Own a SIGHUP handler first, so the signal can never end this process.
    let _hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let h = start(files.yaml(false, &[])).await;
    let health = |c: reqwest::Client| {
        let url = format!("{}/healthz", h.url);
        async move { c.get(url).send().await }
    };
    assert_eq!(health(client(&[&ca1], None)).await.unwrap().status(), 200);
    files.write_server(&ca2.server());
    // The gateway's signal task may not be listening yet: signal until it acts.
    let mut swapped = false;
    for _ in 0..50 {
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(std::process::id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::sleep(Duration::from_millis(100)).await;
        if health(client(&[&ca2], None)).await.is_ok() {
            swapped = true;
            break;
        }
    }
    assert!(swapped, "SIGHUP did not reload the certificate");
    h.stop().await;
}

#[test]
fn configuration_is_checked() {
    let ca = Ca::new("Test CA");
    let files = Files::new(&ca.server(), &ca);
    let env = |_: &str| None;
    let check = |tls: &str| {
        let yaml = format!("listen: 127.0.0.1:0\ndatabase: \"sqlite::memory:\"\n{tls}");
        Config::from_yaml(&yaml, &env, ConfigSource::Defaults)
    };

    let ok = check(&files.yaml(true, &[])).unwrap();
    let tls = ok.tls.unwrap();
    let auth = tls.client_auth.unwrap();
    assert_eq!(auth.identity, portcullis::tls::ClientIdentity::San);
    assert_eq!(auth.mode, portcullis::tls::ClientCertMode::Required);
    assert!(check("").unwrap().tls.is_none());

    let locations = |tls: &str| -> Vec<String> {
        check(tls)
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.location)
            .collect()
    };
    let missing = Path::new("/nonexistent/portcullis.pem")
        .display()
        .to_string();
    assert_eq!(
        locations(&format!(
            "tls:\n  cert: {missing}\n  key: {}\n",
            files.key.display()
        )),
        ["tls.cert"]
    );
    assert_eq!(
        locations(&files.yaml(false, &["client_identity: cn", "client_cert: optional"])),
        ["tls.client_identity", "tls.client_cert"]
    );
    assert!(locations(&files.yaml(true, &["client_identity: email"]))[0].starts_with("line"));
    assert!(locations(&files.yaml(true, &["verify: true"]))[0].starts_with("line"));
    // A key that belongs to another certificate.
    std::fs::write(&files.key, Ca::new("x").server().key).unwrap();
    assert_eq!(locations(&files.yaml(false, &[])), ["tls.key"]);
}
