//! URLs as magnetfetch needs them (RFC 3986, only the parts used): `http://`, `https://` and
//! `udp://` (BEP 15 trackers share the syntax), IPv6 literals in brackets, userinfo dropped.

use super::HttpError;

/// A parsed `http://`, `https://` or `udp://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path plus query, starting with `/` (`/` when absent).
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, HttpError> {
        let bad = || HttpError::BadUrl(url.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            "udp" => 0,
            _ => return Err(HttpError::UnsupportedScheme(url.to_string())),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        // Drop any userinfo: it is never needed and must not become the host.
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => default_port,
                None => return Err(bad()),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Url {
            scheme,
            host,
            port,
            path,
        })
    }

    /// `http` or `https`: what the HTTP client can fetch.
    pub fn is_http(&self) -> bool {
        self.scheme == "http" || self.scheme == "https"
    }

    /// `host:port` as it goes into a `Host:` header.
    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parse() {
        let u = Url::parse("udp://[::1]:6969/announce").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 6969, "/announce")
        );
        assert_eq!(u.host_header(), "[::1]:6969");
        let u = Url::parse("http://127.0.0.1/ann?x=1").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/ann?x=1"));
        assert_eq!(Url::parse("http://h:1").unwrap().path, "/");
        assert_eq!(Url::parse("https://h?q").unwrap().path, "/?q");
        assert_eq!(Url::parse("HTTPS://u:p@h/").unwrap().host, "h");
        assert_eq!(Url::parse("https://h/").unwrap().port, 443);
        assert!(Url::parse("udp://host").is_err());
        assert!(matches!(
            Url::parse("ftp://h/"),
            Err(HttpError::UnsupportedScheme(_))
        ));
        assert!(Url::parse("http://h:99999/").is_err());
        assert!(Url::parse("http://[::1/").is_err());
        assert!(matches!(Url::parse("nonsense"), Err(HttpError::BadUrl(_))));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(s in "\\PC{0,80}") {
            if let Ok(u) = Url::parse(&s) {
                proptest::prop_assert!(u.path.starts_with('/') && u.port != 0 && !u.host.is_empty());
            }
        }
    }
}
