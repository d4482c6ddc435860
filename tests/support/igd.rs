//! An Internet Gateway Device for tests: an SSDP responder on a unicast loopback address
//! (point the mapper's search at [`TestIgd::ssdp`]), the device description, and a SOAP
//! control URL for `WANIPConnection:1` that keeps a mapping table. It can refuse leases with
//! a time (error 725), hold ports for another host (error 718), send garbage and hostile
//! SSDP replies first, or serve a description whose control URL is on another host.
//! Written from the UPnP IGD spec, independently of magnetfetch's own codecs; std threads,
//! so sync CLI tests and tokio tests use it alike.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SERVICE: &str = "urn:schemas-upnp-org:service:WANIPConnection:1";

/// One mapping the IGD holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub internal_port: u16,
    pub client: String,
    pub lease: u32,
    pub description: String,
}

/// How the IGD behaves.
#[derive(Debug, Clone, Default)]
pub struct IgdOptions {
    /// Answer a lease other than 0 with 725 OnlyPermanentLeasesSupported.
    pub permanent_only: bool,
    /// External ports (TCP and UDP) another host already holds: 718 ConflictInMappingEntry.
    pub taken: Vec<u16>,
    /// Before the real reply, send garbage and a reply whose LOCATION is on `foreign`.
    pub hostile_ssdp: Option<SocketAddr>,
    /// The control URL in the description (default: a path on this IGD).
    pub control_url: Option<String>,
    /// The WAN connection service it offers (default [`SERVICE`]).
    pub service: Option<String>,
}

/// What the IGD saw and holds.
#[derive(Debug, Default)]
pub struct IgdState {
    /// (protocol, external port) → mapping.
    pub mappings: BTreeMap<(String, u16), Mapping>,
    /// Every SOAP action, e.g. `AddPortMapping TCP 6881 lease=3600 -> 725`.
    pub log: Vec<String>,
    pub searches: usize,
    /// The service type of every SOAPAction header.
    pub soap_services: Vec<String>,
}

pub struct TestIgd {
    pub ssdp: SocketAddr,
    pub http: SocketAddr,
    pub external_ip: Ipv4Addr,
    pub state: Arc<Mutex<IgdState>>,
}

impl TestIgd {
    /// Starts the IGD on `ip` (SSDP and HTTP on ports of the system's choice).
    pub fn start(ip: Ipv4Addr, opts: IgdOptions) -> TestIgd {
        let udp = UdpSocket::bind((ip, 0)).expect("bind SSDP");
        let ssdp = udp.local_addr().unwrap();
        let tcp = TcpListener::bind((ip, 0)).expect("bind IGD HTTP");
        let http = tcp.local_addr().unwrap();
        let state = Arc::new(Mutex::new(IgdState::default()));
        let external_ip = Ipv4Addr::new(203, 0, 113, 77);
        let location = format!("http://{http}/rootDesc.xml");
        {
            let (state, opts) = (state.clone(), opts.clone());
            std::thread::spawn(move || ssdp_loop(udp, location, opts, state));
        }
        {
            let state = state.clone();
            std::thread::spawn(move || {
                for s in tcp.incoming() {
                    let Ok(s) = s else { continue };
                    let (state, opts) = (state.clone(), opts.clone());
                    std::thread::spawn(move || http_one(s, http, external_ip, &opts, &state));
                }
            });
        }
        TestIgd {
            ssdp,
            http,
            external_ip,
            state,
        }
    }

    pub fn mappings(&self) -> BTreeMap<(String, u16), Mapping> {
        self.state.lock().unwrap().mappings.clone()
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

fn ssdp_loop(udp: UdpSocket, location: String, opts: IgdOptions, state: Arc<Mutex<IgdState>>) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf) else {
            return;
        };
        let req = String::from_utf8_lossy(&buf[..n]);
        if !req.starts_with("M-SEARCH * HTTP/1.1\r\n") || !req.contains("ssdp:discover") {
            continue;
        }
        state.lock().unwrap().searches += 1;
        if let Some(foreign) = opts.hostile_ssdp {
            let _ = udp.send_to(b"\x00\xffgarbage\r\n\r\n", from);
            let _ = udp.send_to(&vec![b'H'; 4000], from);
            let hostile = format!(
                "HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nLOCATION: http://{foreign}/rootDesc.xml\r\n\r\n"
            );
            let _ = udp.send_to(hostile.as_bytes(), from);
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nUSN: uuid:test::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nSERVER: test/1 UPnP/1.1 test-igd/1\r\nLOCATION: {location}\r\n\r\n"
        );
        let _ = udp.send_to(reply.as_bytes(), from);
    }
}

fn description(control: &str, service: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><friendlyName>test IGD</friendlyName>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId><controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL><SCPDURL>/L3F.xml</SCPDURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>{service}</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>{control}</controlURL><eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>
"#
    )
}

/// The text of `<name>...</name>` in a SOAP body (no entities needed for these fields).
fn arg(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let s = body.find(&open)? + open.len();
    let e = body[s..].find(&close)? + s;
    Some(body[s..e].to_string())
}

fn reply(s: &mut TcpStream, status: &str, ctype: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body.as_bytes());
}

fn soap_ok(action: &str, service: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:{action}Response xmlns:u=\"{service}\">{inner}</u:{action}Response></s:Body></s:Envelope>\r\n"
    )
}

fn soap_fault(code: u16, text: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode><errorDescription>{text}</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>\r\n"
    )
}

fn http_one(
    mut s: TcpStream,
    me: SocketAddr,
    external_ip: Ipv4Addr,
    opts: &IgdOptions,
    state: &Mutex<IgdState>,
) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    let line = head.lines().next().unwrap_or("");
    if line.starts_with("GET /rootDesc.xml ") {
        let control = opts
            .control_url
            .clone()
            .unwrap_or_else(|| "/ctl/IPConn".to_string());
        let service = opts.service.as_deref().unwrap_or(SERVICE);
        return reply(
            &mut s,
            "200 OK",
            "text/xml",
            &description(&control, service),
        );
    }
    if !line.starts_with("POST /ctl/IPConn ") {
        return reply(&mut s, "404 Not Found", "text/plain", "");
    }
    let action = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("soapaction")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let (service, action) = action
        .trim_matches('"')
        .split_once('#')
        .map(|(s, a)| (s.to_string(), a.to_string()))
        .unwrap_or_default();
    let mut st = state.lock().unwrap();
    st.soap_services.push(service.clone());
    let proto = arg(&body, "NewProtocol").unwrap_or_default();
    let ext: u16 = arg(&body, "NewExternalPort")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let (status, out, entry) = match action.as_str() {
        "GetExternalIPAddress" => (
            200,
            soap_ok(
                &action,
                &service,
                &format!("<NewExternalIPAddress>{external_ip}</NewExternalIPAddress>"),
            ),
            "GetExternalIPAddress".to_string(),
        ),
        "AddPortMapping" => {
            let lease: u32 = arg(&body, "NewLeaseDuration")
                .and_then(|l| l.parse().ok())
                .unwrap_or(u32::MAX);
            let entry = format!("AddPortMapping {proto} {ext} lease={lease}");
            if opts.permanent_only && lease != 0 {
                (
                    500,
                    soap_fault(725, "OnlyPermanentLeasesSupported"),
                    entry + " -> 725",
                )
            } else if opts.taken.contains(&ext) {
                (
                    500,
                    soap_fault(718, "ConflictInMappingEntry"),
                    entry + " -> 718",
                )
            } else {
                let m = Mapping {
                    internal_port: arg(&body, "NewInternalPort")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0),
                    client: arg(&body, "NewInternalClient").unwrap_or_default(),
                    lease,
                    description: arg(&body, "NewPortMappingDescription").unwrap_or_default(),
                };
                st.mappings.insert((proto.clone(), ext), m);
                (200, soap_ok(&action, &service, ""), entry)
            }
        }
        "DeletePortMapping" => {
            let entry = format!("DeletePortMapping {proto} {ext}");
            if st.mappings.remove(&(proto.clone(), ext)).is_some() {
                (200, soap_ok(&action, &service, ""), entry)
            } else {
                (
                    500,
                    soap_fault(714, "NoSuchEntryInArray"),
                    entry + " -> 714",
                )
            }
        }
        _ => (500, soap_fault(401, "Invalid Action"), action.clone()),
    };
    st.log.push(entry);
    drop(st);
    let status = if status == 200 {
        "200 OK"
    } else {
        "500 Internal Server Error"
    };
    let _ = me;
    reply(&mut s, status, "text/xml; charset=\"utf-8\"", &out);
}
