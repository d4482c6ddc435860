//! A NAT-PMP (RFC 6886) and PCP (RFC 6887) gateway for tests, on `IP:5351` of a loopback
//! address: external-address, MAP and ANNOUNCE requests, a mapping table, an epoch that a
//! [`TestPmp::restart`] sets back (and forgets every mapping, as a rebooted router does),
//! optionally NAT-PMP only, an error for every request, or garbage sent before each reply.
//! Written from the RFCs, independently of magnetfetch's own codecs; a std thread.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct PmpOptions {
    /// Answer PCP (version 2); else only NAT-PMP (version 0), answering PCP with NAT-PMP's
    /// "unsupported version".
    pub pcp: bool,
    /// Answer every mapping request with this result code.
    pub error: Option<u8>,
    /// Send a garbage datagram before every real reply.
    pub garbage_first: bool,
    /// Answer nothing but garbage.
    pub only_garbage: bool,
}

#[derive(Debug)]
pub struct PmpState {
    /// (protocol number 6/17, internal port) → (external port, lifetime).
    pub mappings: BTreeMap<(u8, u16), (u16, u32)>,
    /// Every request, e.g. `natpmp map 6 6881 lifetime=2`.
    pub log: Vec<String>,
    epoch_start: Instant,
    /// Added to the seconds since `epoch_start`: a long-running router's epoch.
    epoch_offset: u32,
}

pub struct TestPmp {
    pub addr: SocketAddr,
    pub external_ip: Ipv4Addr,
    pub state: Arc<Mutex<PmpState>>,
}

impl TestPmp {
    /// Starts the gateway on `ip:5351`.
    pub fn start(ip: Ipv4Addr, opts: PmpOptions) -> TestPmp {
        let sock = UdpSocket::bind((ip, 5351)).expect("bind 5351");
        let addr = sock.local_addr().unwrap();
        let state = Arc::new(Mutex::new(PmpState {
            mappings: BTreeMap::new(),
            log: Vec::new(),
            epoch_start: Instant::now(),
            epoch_offset: 5000,
        }));
        let external_ip = Ipv4Addr::new(198, 51, 100, 23);
        let st = state.clone();
        std::thread::spawn(move || serve(sock, opts, external_ip, st));
        TestPmp {
            addr,
            external_ip,
            state,
        }
    }

    /// A reboot: the epoch starts again from 0 and every mapping is gone.
    pub fn restart(&self) {
        let mut st = self.state.lock().unwrap();
        st.mappings.clear();
        st.epoch_start = Instant::now();
        st.epoch_offset = 0;
        st.log.push("restart".into());
    }

    pub fn mappings(&self) -> BTreeMap<(u8, u16), (u16, u32)> {
        self.state.lock().unwrap().mappings.clone()
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

fn serve(sock: UdpSocket, opts: PmpOptions, external: Ipv4Addr, state: Arc<Mutex<PmpState>>) {
    let mut buf = [0u8; 1200];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            return;
        };
        let req = &buf[..n];
        if opts.garbage_first || opts.only_garbage {
            let _ = sock.send_to(&[0x55; 7], from);
            let _ = sock.send_to(&[2, 0x81, 0, 0], from);
            let _ = sock.send_to(&[0, 0x82, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], from);
        }
        if opts.only_garbage {
            continue;
        }
        let mut st = state.lock().unwrap();
        let epoch = st.epoch_start.elapsed().as_secs() as u32 + st.epoch_offset;
        let out = match req.first() {
            Some(0) => natpmp(req, &opts, external, epoch, &mut st),
            Some(2) if opts.pcp => pcp(req, &opts, external, epoch, &mut st),
            // RFC 6887 section 9: a NAT-PMP server answers other versions with its own
            // "unsupported version".
            Some(_) if !opts.pcp => {
                st.log.push("pcp refused".into());
                let mut r = vec![0, 128 + (req.get(1).copied().unwrap_or(0) & 0x7f), 0, 1];
                r.extend_from_slice(&epoch.to_be_bytes());
                Some(r)
            }
            _ => None,
        };
        drop(st);
        if let Some(out) = out {
            let _ = sock.send_to(&out, from);
        }
    }
}

fn natpmp(
    req: &[u8],
    opts: &PmpOptions,
    external: Ipv4Addr,
    epoch: u32,
    st: &mut PmpState,
) -> Option<Vec<u8>> {
    let op = *req.get(1)?;
    let mut r = vec![0, 128 + op];
    match op {
        0 => {
            st.log.push("natpmp external".into());
            r.extend_from_slice(&0u16.to_be_bytes());
            r.extend_from_slice(&epoch.to_be_bytes());
            r.extend_from_slice(&external.octets());
        }
        1 | 2 if req.len() >= 12 => {
            let proto = if op == 1 { 17 } else { 6 };
            let internal = u16::from_be_bytes([req[4], req[5]]);
            let suggested = u16::from_be_bytes([req[6], req[7]]);
            let lifetime = u32::from_be_bytes([req[8], req[9], req[10], req[11]]);
            st.log
                .push(format!("natpmp map {proto} {internal} lifetime={lifetime}"));
            let code = u16::from(opts.error.unwrap_or(0));
            let external_port = if lifetime == 0 {
                st.mappings.remove(&(proto, internal));
                0
            } else if code == 0 {
                st.mappings.insert((proto, internal), (suggested, lifetime));
                suggested
            } else {
                0
            };
            r.extend_from_slice(&code.to_be_bytes());
            r.extend_from_slice(&epoch.to_be_bytes());
            r.extend_from_slice(&internal.to_be_bytes());
            r.extend_from_slice(&external_port.to_be_bytes());
            r.extend_from_slice(&lifetime.to_be_bytes());
        }
        _ => {
            r.extend_from_slice(&5u16.to_be_bytes());
            r.extend_from_slice(&epoch.to_be_bytes());
        }
    }
    Some(r)
}

fn pcp(
    req: &[u8],
    opts: &PmpOptions,
    external: Ipv4Addr,
    epoch: u32,
    st: &mut PmpState,
) -> Option<Vec<u8>> {
    if req.len() < 24 {
        return None;
    }
    let op = req[1] & 0x7f;
    let lifetime = u32::from_be_bytes([req[4], req[5], req[6], req[7]]);
    let mut r = vec![2, 0x80 | op, 0, 0];
    match op {
        0 => {
            st.log.push("pcp announce".into());
            r.extend_from_slice(&0u32.to_be_bytes());
            r.extend_from_slice(&epoch.to_be_bytes());
            r.extend_from_slice(&[0; 12]);
        }
        1 if req.len() >= 60 => {
            let body = &req[24..60];
            let proto = body[12];
            let internal = u16::from_be_bytes([body[16], body[17]]);
            let suggested = u16::from_be_bytes([body[18], body[19]]);
            st.log
                .push(format!("pcp map {proto} {internal} lifetime={lifetime}"));
            let code = opts.error.unwrap_or(0);
            r[3] = code;
            let external_port = if lifetime == 0 {
                st.mappings.remove(&(proto, internal));
                0
            } else if code == 0 {
                st.mappings.insert((proto, internal), (suggested, lifetime));
                suggested
            } else {
                0
            };
            r.extend_from_slice(&lifetime.to_be_bytes());
            r.extend_from_slice(&epoch.to_be_bytes());
            r.extend_from_slice(&[0; 12]);
            r.extend_from_slice(&body[..12]); // nonce
            r.push(proto);
            r.extend_from_slice(&[0; 3]);
            r.extend_from_slice(&internal.to_be_bytes());
            r.extend_from_slice(&external_port.to_be_bytes());
            r.extend_from_slice(&external.to_ipv6_mapped().octets());
        }
        _ => {
            r[3] = 4; // UNSUPP_OPCODE
            r.extend_from_slice(&0u32.to_be_bytes());
            r.extend_from_slice(&epoch.to_be_bytes());
            r.extend_from_slice(&[0; 12]);
        }
    }
    Some(r)
}
