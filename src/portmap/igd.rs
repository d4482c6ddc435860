//! UPnP Internet Gateway Device control: the device description (which WAN connection
//! service, which control URL), and the SOAP 1.1 actions of `WANIPConnection:1/2` and
//! `WANPPPConnection:1` magnetfetch uses (`AddPortMapping`, `DeletePortMapping`,
//! `GetExternalIPAddress`), with their replies and faults (UPnP IGD `WANIPConnection`
//! service, section 2.4). Pure: the HTTP exchange is the mapper's.
//!
//! A description comes from whichever LAN host answered the SSDP search: its control URL
//! must be on that same host (an IP literal, no names to resolve), or a hostile answer could
//! make us send requests anywhere.

use std::net::{IpAddr, SocketAddr};

use super::xml::{self, Event, XmlError};
use crate::http::Url;

/// The WAN connection services we can drive, best first.
pub const SERVICE_TYPES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

/// UPnP error codes the mapper acts on.
pub const ERR_CONFLICT: u16 = 718;
pub const ERR_ONLY_PERMANENT_LEASES: u16 = 725;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgdError {
    #[error("device description: {0}")]
    Xml(#[from] XmlError),
    #[error("no WANIPConnection or WANPPPConnection service in the device description")]
    NoService,
    #[error("URL {0:?} is not on the host that answered the search")]
    ForeignHost(String),
    #[error("bad URL {0:?}")]
    BadUrl(String),
    #[error("UPnP error {code}: {description}")]
    Fault { code: u16, description: String },
    #[error("HTTP {0} from the gateway")]
    Status(u16),
    #[error("reply lacks {0}")]
    Missing(&'static str),
}

/// A WAN connection service to send actions to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub service_type: String,
    /// Where the control URL is: always the IGD's own address.
    pub addr: SocketAddr,
    /// The control URL's path (and query).
    pub path: String,
}

/// The address and path of `url`, which must be `http://` to the IP literal `host`.
pub fn url_on_host(url: &str, host: IpAddr) -> Result<(SocketAddr, String), IgdError> {
    let u = Url::parse(url).map_err(|_| IgdError::BadUrl(url.to_string()))?;
    if u.scheme != "http" {
        return Err(IgdError::BadUrl(url.to_string()));
    }
    let ip: IpAddr = u
        .host
        .parse()
        .map_err(|_| IgdError::ForeignHost(url.to_string()))?;
    if ip != host {
        return Err(IgdError::ForeignHost(url.to_string()));
    }
    Ok((SocketAddr::new(ip, u.port), u.path))
}

/// The best service of a device description fetched from `location` (already checked to be
/// on `host`), its control URL resolved against `URLBase` or `location`.
pub fn parse_description(doc: &[u8], location: &str, host: IpAddr) -> Result<Service, IgdError> {
    let ev = xml::events(doc)?;
    let mut base: Option<String> = None;
    let mut found: Vec<(String, String)> = Vec::new();
    let mut in_service = false;
    let (mut st, mut ctl) = (None::<String>, None::<String>);
    let mut cur: Option<&str> = None;
    for e in &ev {
        match e {
            Event::Start("service") => {
                in_service = true;
                st = None;
                ctl = None;
            }
            Event::End("service") => {
                if let (Some(s), Some(c)) = (st.take(), ctl.take()) {
                    if found.len() < 64 {
                        found.push((s, c));
                    }
                }
                in_service = false;
            }
            Event::Start(n) => cur = Some(n),
            Event::End(_) => cur = None,
            Event::Text(t) => match (cur, in_service) {
                (Some("serviceType"), true) => st = Some(t.clone()),
                (Some("controlURL"), true) => ctl = Some(t.clone()),
                (Some("URLBase"), false) => base = Some(t.clone()),
                _ => {}
            },
        }
    }
    let (service_type, control) = SERVICE_TYPES
        .iter()
        .find_map(|want| found.iter().find(|(s, _)| s == want))
        .ok_or(IgdError::NoService)?;
    let base = base.unwrap_or_else(|| location.to_string());
    let url = if control.starts_with("http://") || control.contains("://") {
        control.clone()
    } else {
        let (addr, base_path) = url_on_host(&base, host)?;
        let path = if control.starts_with('/') {
            control.clone()
        } else {
            let dir = base_path.rfind('/').map_or("", |i| &base_path[..i]);
            format!("{dir}/{control}")
        };
        format!("http://{addr}{path}")
    };
    let (addr, path) = url_on_host(&url, host)?;
    Ok(Service {
        service_type: service_type.clone(),
        addr,
        path,
    })
}

/// A SOAP action: the `SOAPAction` header's value and the envelope.
pub fn soap_request(service_type: &str, action: &str, args: &[(&str, String)]) -> (String, String) {
    let mut body = format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:{action} xmlns:u=\"{}\">",
        xml::escape(service_type)
    );
    for (k, v) in args {
        body.push_str(&format!("<{k}>{}</{k}>", xml::escape(v)));
    }
    body.push_str(&format!("</u:{action}></s:Body></s:Envelope>\r\n"));
    (format!("\"{service_type}#{action}\""), body)
}

/// `AddPortMapping` arguments (`NewRemoteHost` empty: from anyone).
pub fn add_port_mapping_args(
    proto: &str,
    external: u16,
    internal: u16,
    client: IpAddr,
    description: &str,
    lease: u32,
) -> Vec<(&'static str, String)> {
    vec![
        ("NewRemoteHost", String::new()),
        ("NewExternalPort", external.to_string()),
        ("NewProtocol", proto.to_string()),
        ("NewInternalPort", internal.to_string()),
        ("NewInternalClient", client.to_string()),
        ("NewEnabled", "1".to_string()),
        ("NewPortMappingDescription", description.to_string()),
        ("NewLeaseDuration", lease.to_string()),
    ]
}

/// `DeletePortMapping` arguments.
pub fn delete_port_mapping_args(proto: &str, external: u16) -> Vec<(&'static str, String)> {
    vec![
        ("NewRemoteHost", String::new()),
        ("NewExternalPort", external.to_string()),
        ("NewProtocol", proto.to_string()),
    ]
}

/// A SOAP reply: HTTP 200 is success (and `want`'s text when asked for), a fault carries
/// a UPnP `errorCode` (HTTP 500), anything else is an error.
pub fn parse_soap_reply(
    status: u16,
    body: &[u8],
    want: Option<&'static str>,
) -> Result<Option<String>, IgdError> {
    if status == 200 {
        return match want {
            None => Ok(None),
            Some(name) => match xml::first_text(body, name)? {
                Some(t) => Ok(Some(t)),
                None => Err(IgdError::Missing(name)),
            },
        };
    }
    let code = xml::first_text(body, "errorCode")
        .ok()
        .flatten()
        .and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(code) => {
            let description = xml::first_text(body, "errorDescription")
                .ok()
                .flatten()
                .unwrap_or_default();
            let description: String = description
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            Err(IgdError::Fault { code, description })
        }
        None => Err(IgdError::Status(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESC: &str = r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<controlURL>/ctl/L3F</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><deviceList><device>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType>
<controlURL>/ctl/PPP</controlURL></service>
<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>ctl/IPConn</controlURL>
<eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>"#;

    #[test]
    fn description_picks_the_ip_connection_on_the_answering_host() {
        let host: IpAddr = "192.168.1.1".parse().unwrap();
        let s =
            parse_description(DESC.as_bytes(), "http://192.168.1.1:5000/d/root.xml", host).unwrap();
        assert_eq!(
            s,
            Service {
                service_type: SERVICE_TYPES[1].into(),
                addr: "192.168.1.1:5000".parse().unwrap(),
                path: "/d/ctl/IPConn".into()
            }
        );
        // URLBase and an absolute control URL on another host.
        let doc = DESC.replace(
            "<device>",
            "<URLBase>http://192.168.1.1:80/</URLBase><device>",
        );
        let s = parse_description(doc.as_bytes(), "http://192.168.1.1:5000/root.xml", host);
        assert_eq!(s.unwrap().addr, "192.168.1.1:80".parse().unwrap());
        let doc = DESC.replace("ctl/IPConn", "http://10.9.9.9:80/steal");
        let s = parse_description(doc.as_bytes(), "http://192.168.1.1:5000/root.xml", host);
        assert!(matches!(s, Err(IgdError::ForeignHost(_))), "{s:?}");
        let doc = DESC.replace("ctl/IPConn", "http://router.lan/ctl");
        let s = parse_description(doc.as_bytes(), "http://192.168.1.1:5000/root.xml", host);
        assert!(matches!(s, Err(IgdError::ForeignHost(_))), "{s:?}");
        let doc = DESC
            .replace("WANIPConnection", "Other")
            .replace("WANPPP", "Other");
        let s = parse_description(doc.as_bytes(), "http://192.168.1.1:5000/root.xml", host);
        assert_eq!(s, Err(IgdError::NoService));
        assert!(url_on_host("http://192.168.1.2/x", host).is_err());
        assert!(url_on_host("https://192.168.1.1/x", host).is_err());
    }

    #[test]
    fn soap_envelopes_and_replies() {
        let (action, body) = soap_request(
            SERVICE_TYPES[1],
            "AddPortMapping",
            &add_port_mapping_args("TCP", 6881, 6881, "10.0.0.2".parse().unwrap(), "a<b", 0),
        );
        assert_eq!(
            action,
            "\"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping\""
        );
        assert_eq!(
            xml::first_text(body.as_bytes(), "NewPortMappingDescription").unwrap(),
            Some("a<b".into())
        );
        assert_eq!(
            xml::first_text(body.as_bytes(), "NewExternalPort").unwrap(),
            Some("6881".into())
        );
        let ok = b"<s:Envelope><s:Body><u:GetExternalIPAddressResponse><NewExternalIPAddress>203.0.113.5</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>";
        assert_eq!(
            parse_soap_reply(200, ok, Some("NewExternalIPAddress")),
            Ok(Some("203.0.113.5".into()))
        );
        assert_eq!(parse_soap_reply(200, b"", None), Ok(None));
        let fault = b"<s:Envelope><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>725</errorCode><errorDescription>OnlyPermanentLeasesSupported</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>";
        assert_eq!(
            parse_soap_reply(500, fault, None),
            Err(IgdError::Fault {
                code: 725,
                description: "OnlyPermanentLeasesSupported".into()
            })
        );
        assert_eq!(
            parse_soap_reply(500, b"<x", None),
            Err(IgdError::Status(500))
        );
        assert!(parse_soap_reply(200, b"<a></a>", Some("NewExternalIPAddress")).is_err());
    }
}
