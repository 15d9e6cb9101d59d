//! Finding out what a proxy supports, for `socksmith check`: SOCKS4, SOCKS4a and SOCKS5, the
//! authentication methods it accepts, remote name resolution, IPv6 targets, BIND, UDP
//! ASSOCIATE and Tor's RESOLVE, each with the time the handshake took.
//!
//! Every probe is a real request through the proxy (reached through the hops before it, if
//! any) to targets the caller chooses: [`LoopbackTargets`] names echo servers on 127.0.0.1
//! and ::1 for a proxy on this machine (the caller runs them), and a [`ProbeTargets::Given`] target serves a remote
//! proxy (then round trips, BIND peers and datagrams are not tested, only the proxy's
//! answers). The probes never connect anywhere but the proxy and those targets; a BIND
//! listening address is only connected to when it is on loopback or is the proxy's own
//! address.
//!
//! Method probing sends SOCKS5 greetings offering one method each, encoded and decoded by
//! [`socksmith_proto`]; everything else goes through [`Client`].
//!
//! An `http://` proxy gets its own probes ([`HttpFindings`]): CONNECT with the URL's
//! credentials, whether it lets CONNECT reach a port other than 443 (many HTTP proxies allow
//! only that one), whether it requires Basic authentication (a CONNECT without credentials)
//! and whether the URL's credentials pass; remote DNS and IPv6 targets through CONNECT. It
//! carries nothing but CONNECT, so the SOCKS rows say so without sending anything.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use socksmith_proto::{AuthMethod, Greeting, MethodChoice, TargetAddr};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::builder::{Client, Timeouts};
use super::error::{ClientError, HopErrorKind, HttpError, Step};
use super::url::{Protocol, Proxy, ProxyHost};

/// The bytes sent through every tunnel and datagram a probe opens, expected back from an
/// echo target.
const PROBE_BYTES: &[u8] = b"socksmith check probe\n";

/// How the detail of a probe that could not reach the proxy starts.
const UNREACHABLE: &str = "cannot reach the proxy: ";

/// The methods whose acceptance is probed, one greeting each.
const METHODS: [AuthMethod; 3] = [
    AuthMethod::NoAuth,
    AuthMethod::UsernamePassword,
    AuthMethod::Gssapi,
];

/// Whether a proxy supports something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Support {
    /// It works.
    Yes,
    /// It does not (the detail says how the proxy answered).
    No,
    /// Not probed (the detail says why).
    Untested,
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that width and alignment flags work in tables.
        f.pad(match self {
            Support::Yes => "yes",
            Support::No => "no",
            Support::Untested => "untested",
        })
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Whether it works.
    pub support: Support,
    /// How the proxy answered, or why it was not probed.
    pub detail: String,
    /// For a successful request: from the start of the TCP connection to the proxy's reply.
    pub latency: Option<Duration>,
}

impl Finding {
    fn yes(detail: impl Into<String>, latency: Option<Duration>) -> Self {
        Finding {
            support: Support::Yes,
            detail: detail.into(),
            latency,
        }
    }

    fn no(detail: impl Into<String>) -> Self {
        Finding {
            support: Support::No,
            detail: detail.into(),
            latency: None,
        }
    }

    fn untested(detail: impl Into<String>) -> Self {
        Finding {
            support: Support::Untested,
            detail: detail.into(),
            latency: None,
        }
    }

    /// Whether the probe found the feature working.
    pub fn works(&self) -> bool {
        self.support == Support::Yes
    }
}

/// What a proxy supports. [`Self::connect_works`] says whether any version carries a CONNECT;
/// `socksmith check` judges the one its URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The probed proxy (the last hop), password redacted.
    pub proxy: String,
    /// Set when the proxy could not be reached at all (then every finding says so).
    pub unreachable: Option<String>,
    /// SOCKS5 CONNECT (names resolved by this side).
    pub socks5: Finding,
    /// The SOCKS5 authentication methods the proxy accepts when offered alone, and how it
    /// answered each.
    pub auth_methods: Vec<(AuthMethod, Finding)>,
    /// SOCKS4 CONNECT to an IPv4 address.
    pub socks4: Finding,
    /// SOCKS4a CONNECT to a name the proxy resolves.
    pub socks4a: Finding,
    /// SOCKS5 CONNECT to a name the proxy resolves (`socks5h`).
    pub remote_dns: Finding,
    /// CONNECT to an IPv6 address.
    pub ipv6_target: Finding,
    /// BIND.
    pub bind: Finding,
    /// UDP ASSOCIATE and a datagram round trip.
    pub udp_associate: Finding,
    /// Tor's RESOLVE.
    pub resolve: Finding,
    /// For an `http://` proxy, what HTTP CONNECT does (then the SOCKS findings all say the
    /// proxy speaks no SOCKS and [`Self::auth_methods`] is empty); `None` for SOCKS proxies.
    pub http: Option<HttpFindings>,
}

/// What an `http://` proxy supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpFindings {
    /// CONNECT (with the URL's credentials, if any) to an IPv4 target, or the given target.
    pub connect: Finding,
    /// CONNECT to a port other than 443 (many HTTP proxies allow only 443).
    pub any_port: Finding,
    /// Whether Basic authentication is required, and whether the URL's credentials pass:
    /// `yes` when CONNECT works (without credentials, or with the URL's), `no` when the proxy
    /// wants credentials the URL does not have or refuses the URL's.
    pub basic_auth: Finding,
}

impl ProbeReport {
    /// Whether the proxy carries a CONNECT in at least one version (or over HTTP).
    pub fn connect_works(&self) -> bool {
        [&self.socks5, &self.socks4, &self.socks4a, &self.remote_dns]
            .iter()
            .any(|f| f.works())
            || self.http.as_ref().is_some_and(|h| h.connect.works())
    }

    /// The rows of the report, in display order: (name, finding). An `http://` proxy has
    /// HTTP rows in place of the SOCKS versions.
    pub fn rows(&self) -> Vec<(&'static str, &Finding)> {
        if let Some(http) = &self.http {
            return vec![
                ("HTTP CONNECT", &http.connect),
                ("any port", &http.any_port),
                ("Basic auth", &http.basic_auth),
                ("remote DNS", &self.remote_dns),
                ("IPv6 target", &self.ipv6_target),
                ("BIND", &self.bind),
                ("UDP ASSOCIATE", &self.udp_associate),
                ("RESOLVE", &self.resolve),
            ];
        }
        vec![
            ("SOCKS5", &self.socks5),
            ("SOCKS4", &self.socks4),
            ("SOCKS4a", &self.socks4a),
            ("remote DNS", &self.remote_dns),
            ("IPv6 target", &self.ipv6_target),
            ("BIND", &self.bind),
            ("UDP ASSOCIATE", &self.udp_associate),
            ("RESOLVE", &self.resolve),
        ]
    }

    /// The methods accepted when offered alone.
    pub fn accepted_methods(&self) -> Vec<AuthMethod> {
        self.auth_methods
            .iter()
            .filter(|(_, f)| f.works())
            .map(|(m, _)| *m)
            .collect()
    }
}

/// Echo servers on loopback for probing a proxy on this machine: TCP on 127.0.0.1 and (when
/// this host has IPv6) on ::1 with the same port, so that `localhost` reaches one of them
/// whichever address the proxy picks, and UDP on 127.0.0.1. The caller runs them (`socksmith
/// check` uses the bench's targets, written once for the bench, the tests and this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopbackTargets {
    /// The IPv4 TCP echo server.
    pub tcp_v4: SocketAddr,
    /// The IPv6 TCP echo server on the same port, if this host has ::1.
    pub tcp_v6: Option<SocketAddr>,
    /// The UDP echo server.
    pub udp_v4: SocketAddr,
}

/// Where the probes go.
#[derive(Debug)]
pub enum ProbeTargets<'a> {
    /// Echo servers on this machine: everything is probed, round trips included.
    Loopback(&'a LoopbackTargets),
    /// A target of the caller's choosing (for a proxy elsewhere): CONNECT probes that fit its
    /// kind (an IPv4 address, an IPv6 address or a name) are made and only the proxy's reply
    /// is checked; BIND and UDP ASSOCIATE are checked up to the proxy's reply.
    Given(TargetAddr),
}

/// Probes the last hop of `client` (reached through the hops before it), trying each version
/// and command. Never fails: what does not work is reported as such. Each request is bounded
/// by the client's [`Timeouts`].
pub async fn probe(client: &Client, targets: &ProbeTargets<'_>) -> ProbeReport {
    let last = client.last_hop().clone();
    let prober = Prober {
        client,
        last: &last,
        targets,
    };
    if last.protocol().is_http() {
        return prober.http().await;
    }
    let (auth_methods, socks5_spoken) = prober.methods().await;
    if let Some(why) = prober.unreachable(&auth_methods) {
        let no = || Finding::no(why.clone());
        return ProbeReport {
            proxy: last.redacted(),
            unreachable: Some(why.clone()),
            socks5: no(),
            auth_methods,
            socks4: no(),
            socks4a: no(),
            remote_dns: no(),
            ipv6_target: no(),
            bind: no(),
            udp_associate: no(),
            resolve: no(),
            http: None,
        };
    }
    let (ip4, ip6, name) = prober.connect_targets();
    let not_v5 = || Finding::no("the proxy does not speak SOCKS5");
    let socks5 = match (&ip4, socks5_spoken) {
        (_, false) => not_v5(),
        (Some(t), true) => prober.connect(Protocol::Socks5, t.clone()).await,
        (None, true) => Finding::untested("needs an IPv4 target"),
    };
    let remote_dns = match (&name, socks5_spoken) {
        (_, false) => not_v5(),
        (Some(t), true) => prober.connect(Protocol::Socks5h, t.clone()).await,
        (None, true) => Finding::untested("needs a target given by name"),
    };
    let socks4 = match &ip4 {
        Some(t) => prober.connect(Protocol::Socks4, t.clone()).await,
        None => Finding::untested("needs an IPv4 target"),
    };
    let socks4a = match &name {
        Some(t) => prober.connect(Protocol::Socks4a, t.clone()).await,
        None => Finding::untested("needs a target given by name"),
    };
    let ipv6_target = match (&ip6, socks5_spoken) {
        (_, false) => Finding::no("SOCKS4 carries only IPv4 targets"),
        (Some(t), true) => prober.connect(Protocol::Socks5, t.clone()).await,
        (None, true) => Finding::untested("needs an IPv6 target (this host has no ::1)"),
    };
    let bind_protocol = if socks5_spoken {
        Some(Protocol::Socks5)
    } else if socks4.works() {
        Some(Protocol::Socks4)
    } else {
        None
    };
    let bind = match bind_protocol {
        Some(p) => prober.bind(p).await,
        None => Finding::untested("no SOCKS version works"),
    };
    let udp_associate = if socks5_spoken {
        prober.udp().await
    } else {
        Finding::no("UDP ASSOCIATE needs SOCKS5")
    };
    let resolve = if socks5_spoken {
        prober.resolve(Protocol::Socks5h).await
    } else if socks4a.works() {
        prober.resolve(Protocol::Socks4a).await
    } else {
        Finding::untested("needs SOCKS5 or SOCKS4a")
    };
    ProbeReport {
        proxy: last.redacted(),
        unreachable: None,
        socks5,
        auth_methods,
        socks4,
        socks4a,
        remote_dns,
        ipv6_target,
        bind,
        udp_associate,
        resolve,
        http: None,
    }
}

/// How a proxy answered a SOCKS5 greeting.
enum Greet {
    /// With a method choice (possibly "no acceptable methods").
    Chose(AuthMethod),
    /// With something else, or not at all.
    NotSocks5(String),
    /// The proxy could not be reached.
    Unreachable(String),
}

struct Prober<'a> {
    client: &'a Client,
    last: &'a Proxy,
    targets: &'a ProbeTargets<'a>,
}

impl Prober<'_> {
    /// The client with the last hop spoken to in `protocol`. Credentials that protocol
    /// cannot carry (a SOCKS4 user id without a password, probed as SOCKS5) are left out: the
    /// hop is then probed anonymously.
    fn client_as(&self, protocol: Protocol) -> Client {
        let hops = self.client.hops();
        let mut builder = Client::builder()
            .timeouts(*self.client.timeouts())
            .resolver(self.client.resolver.clone());
        for hop in hops.iter().take(hops.len().saturating_sub(1)) {
            builder = builder.proxy(hop.clone());
        }
        let mut last = self.last.clone().with_protocol(protocol);
        if last.credentials().is_err() {
            last = Proxy::with_host(protocol, last.host().clone(), last.port());
        }
        builder
            .proxy(last)
            .build()
            .expect("the earlier hops were built into the probed client; the last is valid")
    }

    fn timeouts(&self) -> &Timeouts {
        self.client.timeouts()
    }

    /// The CONNECT targets: an IPv4 address, an IPv6 address, a name.
    fn connect_targets(&self) -> (Option<TargetAddr>, Option<TargetAddr>, Option<TargetAddr>) {
        match self.targets {
            ProbeTargets::Loopback(t) => (
                Some(TargetAddr::Ip(t.tcp_v4)),
                t.tcp_v6.map(TargetAddr::Ip),
                // Both echo servers share the port, so whichever address "localhost" gives
                // the proxy, it reaches one.
                TargetAddr::domain("localhost", t.tcp_v4.port()).ok(),
            ),
            ProbeTargets::Given(t) => match t.ip_literal() {
                Some(a @ SocketAddr::V4(_)) => (Some(TargetAddr::Ip(a)), None, None),
                Some(a @ SocketAddr::V6(_)) => (None, Some(TargetAddr::Ip(a)), None),
                None => (None, None, Some(t.clone())),
            },
        }
    }

    fn round_trips(&self) -> bool {
        matches!(self.targets, ProbeTargets::Loopback(_))
    }

    /// One greeting per method, each on its own connection. Also says whether the proxy
    /// answered any greeting as a SOCKS5 server would.
    async fn methods(&self) -> (Vec<(AuthMethod, Finding)>, bool) {
        let mut found = Vec::new();
        let mut spoken = false;
        for method in METHODS {
            let finding = match self.greet(method).await {
                Greet::Chose(chosen) => {
                    spoken = true;
                    if chosen == method {
                        Finding::yes("accepted", None)
                    } else if chosen == AuthMethod::NoAcceptable {
                        Finding::no("refused (no acceptable methods)")
                    } else {
                        Finding::no(format!("answered with {chosen}, which was not offered"))
                    }
                }
                Greet::NotSocks5(why) => Finding::no(format!("not SOCKS5: {why}")),
                Greet::Unreachable(why) => Finding::no(format!("{UNREACHABLE}{why}")),
            };
            found.push((method, finding));
        }
        (found, spoken)
    }

    /// When no greeting reached the proxy, why (the same reason for all of them).
    fn unreachable(&self, methods: &[(AuthMethod, Finding)]) -> Option<String> {
        let first = methods.first()?;
        let all_same = methods
            .iter()
            .all(|(_, f)| f.detail == first.1.detail && f.detail.starts_with(UNREACHABLE));
        all_same.then(|| first.1.detail.clone())
    }

    /// Offers `method` alone and returns the proxy's choice.
    async fn greet(&self, method: AuthMethod) -> Greet {
        let hops = self.client.hops();
        if hops.len() == 1 {
            match self.client.connect_first_hop().await {
                Ok(io) => self.greet_over(io, method).await,
                Err(e) => Greet::Unreachable(e.to_string()),
            }
        } else {
            let mut builder = Client::builder()
                .timeouts(*self.timeouts())
                .resolver(self.client.resolver.clone());
            for hop in hops.iter().take(hops.len() - 1) {
                builder = builder.proxy(hop.clone());
            }
            let connected = match builder.build() {
                Ok(prefix) => prefix.connect(hop_target(self.last)).await,
                Err(e) => Err(e),
            };
            match connected {
                Ok(io) => self.greet_over(io, method).await,
                Err(e) => Greet::Unreachable(e.to_string()),
            }
        }
    }

    async fn greet_over<S>(&self, mut io: S, method: AuthMethod) -> Greet
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut out = Vec::new();
        if let Err(e) = (Greeting {
            methods: vec![method],
        })
        .encode(&mut out)
        {
            return Greet::Unreachable(e.to_string());
        }
        let exchange = async {
            io.write_all(&out).await?;
            let mut buf = Vec::with_capacity(MethodChoice::LEN);
            loop {
                if io.read_buf(&mut buf).await? == 0 {
                    return Ok::<_, std::io::Error>(Greet::NotSocks5(
                        "the proxy closed the connection".to_owned(),
                    ));
                }
                match MethodChoice::decode(&buf) {
                    Ok(Some((choice, _))) => return Ok(Greet::Chose(choice.method)),
                    Ok(None) => {}
                    Err(e) => return Ok(Greet::NotSocks5(e.to_string())),
                }
            }
        };
        let limit = self.timeouts().handshake;
        match timeout(limit, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => Greet::NotSocks5(e.to_string()),
            Err(_) => Greet::NotSocks5(format!("no answer within {limit:?}")),
        }
    }

    /// A CONNECT in `protocol`, with an echo round trip on loopback targets.
    async fn connect(&self, protocol: Protocol, target: TargetAddr) -> Finding {
        let client = self.client_as(protocol);
        self.try_connect(&client, &target)
            .await
            .unwrap_or_else(|e| Finding::no(short(&e)))
    }

    /// A CONNECT through `client`: the error when the proxy refused, else the finding (an
    /// echo round trip on loopback targets).
    async fn try_connect(
        &self,
        client: &Client,
        target: &TargetAddr,
    ) -> Result<Finding, ClientError> {
        let start = Instant::now();
        let mut stream = client.connect(target.clone()).await?;
        let latency = start.elapsed();
        if !self.round_trips() {
            return Ok(Finding::yes(
                format!("CONNECT {target} granted"),
                Some(latency),
            ));
        }
        Ok(match echo(&mut stream, self.timeouts().handshake).await {
            Ok(()) => Finding::yes(format!("CONNECT {target}, echo ok"), Some(latency)),
            Err(e) => Finding::no(format!("CONNECT {target} granted, but {e}")),
        })
    }

    /// The report for an `http://` last hop (see [`HttpFindings`]).
    async fn http(&self) -> ProbeReport {
        let (ip4, ip6, name) = self.connect_targets();
        let client = self.client_as(Protocol::Http);
        let no_socks = || Finding::no("an HTTP proxy: it speaks no SOCKS");
        let connect_only = || Finding::no("an HTTP proxy carries CONNECT only");
        let primary = ip4
            .clone()
            .or_else(|| name.clone())
            .or_else(|| ip6.clone())
            .expect("connect_targets gives at least one target");
        let with_url_credentials = self.try_connect(&client, &primary).await;
        if let Err(e) = &with_url_credentials {
            let before_last = e.hop().is_some_and(|hop| hop < self.client.hops().len());
            if matches!(e.step(), Some(Step::Connect)) || before_last {
                let why = format!("{UNREACHABLE}{e}");
                let no = || Finding::no(why.clone());
                return ProbeReport {
                    proxy: self.last.redacted(),
                    unreachable: Some(why.clone()),
                    socks5: no(),
                    auth_methods: Vec::new(),
                    socks4: no(),
                    socks4a: no(),
                    remote_dns: no(),
                    ipv6_target: no(),
                    bind: no(),
                    udp_associate: no(),
                    resolve: no(),
                    http: Some(HttpFindings {
                        connect: no(),
                        any_port: no(),
                        basic_auth: no(),
                    }),
                };
            }
        }
        let connect = match &with_url_credentials {
            Ok(f) => f.clone(),
            Err(e) => Finding::no(short(e)),
        };
        let remote_dns = match &name {
            Some(t) if *t == primary => connect.clone(),
            Some(t) => self.connect(Protocol::Http, t.clone()).await,
            None => Finding::untested("needs a target given by name"),
        };
        let ipv6_target = match &ip6 {
            Some(t) if *t == primary => connect.clone(),
            Some(t) => self.connect(Protocol::Http, t.clone()).await,
            None => Finding::untested("needs an IPv6 target (this host has no ::1)"),
        };
        let any_port = any_port(
            &primary,
            &with_url_credentials,
            [(&name, &remote_dns), (&ip6, &ipv6_target)],
        );
        let basic_auth = self.basic_auth(&primary, &with_url_credentials).await;
        ProbeReport {
            proxy: self.last.redacted(),
            unreachable: None,
            socks5: no_socks(),
            auth_methods: Vec::new(),
            socks4: no_socks(),
            socks4a: no_socks(),
            remote_dns,
            ipv6_target,
            bind: connect_only(),
            udp_associate: connect_only(),
            resolve: connect_only(),
            http: Some(HttpFindings {
                connect,
                any_port,
                basic_auth,
            }),
        }
    }

    /// Whether an `http://` proxy requires Basic authentication and takes the URL's
    /// credentials, from the CONNECT with them and (when the URL has some) one without.
    async fn basic_auth(
        &self,
        target: &TargetAddr,
        with_url_credentials: &Result<Finding, ClientError>,
    ) -> Finding {
        let auth_refusal = |r: &Result<Finding, ClientError>| match r {
            Err(e) => match e.kind() {
                Some(HopErrorKind::Http(
                    refusal @ HttpError::AuthenticationRequired { status, .. },
                )) => Some((*status, refusal.to_string())),
                _ => None,
            },
            Ok(_) => None,
        };
        if self.last.user_info().is_none() {
            return match (with_url_credentials, auth_refusal(with_url_credentials)) {
                (_, Some((status, _))) => Finding::no(format!(
                    "required (HTTP {status} without credentials): give \
                     http://USER:PASSWORD@HOST"
                )),
                (Ok(_), None) => Finding::yes("not required", None),
                (Err(_), None) => Finding::untested("CONNECT failed for another reason"),
            };
        }
        let anonymous = Client::builder()
            .timeouts(*self.timeouts())
            .resolver(self.client.resolver.clone())
            .proxies(
                self.client
                    .hops()
                    .iter()
                    .take(self.client.hops().len().saturating_sub(1))
                    .cloned(),
            )
            .proxy(Proxy::with_host(
                Protocol::Http,
                self.last.host().clone(),
                self.last.port(),
            ))
            .build()
            .expect("the probed client has at least one hop");
        let without = self.try_connect(&anonymous, target).await;
        match (
            auth_refusal(&without),
            with_url_credentials,
            auth_refusal(with_url_credentials),
        ) {
            (None, _, _) if without.is_ok() => {
                Finding::yes("not required (CONNECT works without credentials)", None)
            }
            (Some((status, _)), Ok(_), _) => Finding::yes(
                format!("required (HTTP {status} without credentials); the URL's are accepted"),
                None,
            ),
            (Some(_), Err(_), Some((_, refusal))) => Finding::no(format!(
                "required; the URL's credentials are refused: {refusal}"
            )),
            _ => Finding::untested("CONNECT failed for another reason"),
        }
    }

    /// A BIND; on loopback, a connection to the listening address and a round trip.
    async fn bind(&self, protocol: Protocol) -> Finding {
        let client = self.client_as(protocol);
        let start = Instant::now();
        // The peer that will connect: this host, over IPv4 loopback.
        let peer = TargetAddr::Ip(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0));
        let listener = match client.bind(peer).await {
            Ok(l) => l,
            Err(e) => return Finding::no(short(&e)),
        };
        let latency = start.elapsed();
        let listen = listener.listen_addr().clone();
        let connect_to = match listen.ip_literal() {
            Some(a) if self.round_trips() && may_connect_back(a.ip(), self.last) => a,
            _ => {
                return Finding::yes(
                    format!("{protocol}: listening on {listen} (peer connection not tested)"),
                    Some(latency),
                )
            }
        };
        let limit = self.timeouts().handshake;
        let peer_side = async {
            let mut conn = timeout(limit, TcpStream::connect(connect_to))
                .await
                .map_err(|_| format!("no connection to {connect_to} within {limit:?}"))?
                .map_err(|e| format!("connecting to {connect_to}: {e}"))?;
            conn.write_all(PROBE_BYTES)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(conn)
        };
        let accept = async {
            timeout(limit, listener.accept())
                .await
                .map_err(|_| format!("no second reply within {limit:?}"))?
                .map_err(|e| short(&e))
        };
        let (peer_conn, accepted) = tokio::join!(peer_side, accept);
        let (mut stream, from) = match (peer_conn, accepted) {
            (Ok(_conn), Ok(accepted)) => accepted,
            (Err(e), _) | (_, Err(e)) => return Finding::no(e),
        };
        let mut got = vec![0u8; PROBE_BYTES.len()];
        match timeout(limit, stream.read_exact(&mut got)).await {
            Ok(Ok(_)) if got == PROBE_BYTES => Finding::yes(
                format!("{protocol}: listening on {listen}, peer {from} relayed"),
                Some(latency),
            ),
            _ => Finding::no(format!(
                "{protocol}: peer {from} accepted, but its bytes did not arrive"
            )),
        }
    }

    /// UDP ASSOCIATE; on loopback, a datagram round trip through the UDP echo server.
    async fn udp(&self) -> Finding {
        let client = self.client_as(Protocol::Socks5);
        let start = Instant::now();
        let assoc = match client.udp_associate().await {
            Ok(a) => a,
            Err(e) => return Finding::no(short(&e)),
        };
        let latency = start.elapsed();
        let ProbeTargets::Loopback(t) = self.targets else {
            return Finding::yes(
                format!("relay at {} (datagrams not tested)", assoc.relay_addr()),
                Some(latency),
            );
        };
        let limit = self.timeouts().handshake;
        let round_trip = async {
            // Datagrams may be lost even on loopback: a few tries.
            for _ in 0..3 {
                assoc.send_to(PROBE_BYTES, t.udp_v4).await?;
                let mut buf = vec![0u8; 2048];
                let got = timeout(limit / 3, assoc.recv_from(&mut buf)).await;
                if let Ok(Ok((n, from))) = got {
                    if buf.get(..n) == Some(PROBE_BYTES) {
                        return Ok(from);
                    }
                }
            }
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no echo within {limit:?}"),
            ))
        };
        match round_trip.await {
            Ok(from) => Finding::yes(
                format!("relay at {}, echo from {from}", assoc.relay_addr()),
                Some(latency),
            ),
            Err(e) => Finding::no(format!(
                "association granted (relay {}), but {e}",
                assoc.relay_addr()
            )),
        }
    }

    async fn resolve(&self, protocol: Protocol) -> Finding {
        let client = self.client_as(protocol);
        let start = Instant::now();
        match client.resolve("localhost").await {
            Ok(ip) => Finding::yes(format!("localhost is {ip}"), Some(start.elapsed())),
            Err(e) => Finding::no(short(&e)),
        }
    }
}

/// Whether an HTTP proxy let CONNECT reach a port other than 443, from the CONNECTs made:
/// the first one (`primary`) and the others (target, finding).
fn any_port<'a>(
    primary: &TargetAddr,
    first: &Result<Finding, ClientError>,
    others: impl IntoIterator<Item = (&'a Option<TargetAddr>, &'a Finding)>,
) -> Finding {
    let port = |t: &TargetAddr| match t {
        TargetAddr::Ip(a) => a.port(),
        TargetAddr::Domain(_, p) => *p,
    };
    let granted = std::iter::once((Some(primary), first.as_ref().is_ok_and(|f| f.works())))
        .chain(others.into_iter().map(|(t, f)| (t.as_ref(), f.works())))
        .filter_map(|(t, works)| t.filter(|_| works))
        .find(|t| port(t) != 443);
    if let Some(t) = granted {
        return Finding::yes(format!("CONNECT to port {} granted", port(t)), None);
    }
    match first {
        Err(e) if e.reply_code() == Some(socksmith_proto::ReplyCode::NotAllowed) => {
            Finding::no(format!(
                "port {} refused ({}): the proxy may allow CONNECT to a few ports only (often 443)",
                port(primary),
                short(e)
            ))
        }
        _ if port(primary) == 443 => Finding::untested("only port 443 was tried"),
        _ => Finding::untested("no CONNECT succeeded"),
    }
}

/// An error without the "hop N (url): " prefix when there is only the one hop that matters.
fn short(e: &ClientError) -> String {
    match e {
        ClientError::Hop(h) => format!("{}: {}", h.step, h.kind),
        other => other.to_string(),
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Result<(), String> {
    let exchange = async {
        stream.write_all(PROBE_BYTES).await?;
        let mut got = vec![0u8; PROBE_BYTES.len()];
        stream.read_exact(&mut got).await?;
        Ok::<_, std::io::Error>(got)
    };
    match timeout(limit, exchange).await {
        Ok(Ok(got)) if got == PROBE_BYTES => Ok(()),
        Ok(Ok(_)) => Err("the echo came back different".into()),
        Ok(Err(e)) => Err(format!("the echo failed: {e}")),
        Err(_) => Err(format!("no echo within {limit:?}")),
    }
}

/// A BIND listening address is connected to only when it is on loopback or is the proxy's
/// own address: never somewhere a misbehaving proxy points at.
fn may_connect_back(ip: IpAddr, proxy: &Proxy) -> bool {
    ip.is_loopback() || matches!(proxy.host(), ProxyHost::Ip(p) if *p == ip)
}

fn hop_target(proxy: &Proxy) -> TargetAddr {
    match proxy.host() {
        ProxyHost::Ip(ip) => TargetAddr::Ip(SocketAddr::new(*ip, proxy.port())),
        ProxyHost::Name(name) => {
            TargetAddr::domain(name.as_bytes(), proxy.port()).unwrap_or(TargetAddr::UNSPECIFIED)
        }
    }
}

/// Whether a proxy is on this machine, so that [`LoopbackTargets`] are reachable from it.
pub fn is_loopback(proxy: &Proxy) -> bool {
    match proxy.host() {
        ProxyHost::Ip(ip) => ip.is_loopback(),
        ProxyHost::Name(name) => name == "localhost" || name.ends_with(".localhost"),
    }
}
