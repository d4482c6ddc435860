//! The MSE/PE handshake as pure state machines, one per role: feed them the bytes the peer
//! sent, send what they queue, until they report [`Done`]. No sockets and no clocks (the
//! driver in [`super::stream`] puts a deadline on each wait); every random byte (private
//! key, padding) is drawn from the caller's rng when the machine is made.
//!
//! The exchange (A dials, B answers; S is the DH secret, SKEY the info-hash):
//! 1. A→B `Ya, PadA`
//! 2. B→A `Yb, PadB`
//! 3. A→B `SHA1('req1'|S), SHA1('req2'|SKEY) xor SHA1('req3'|S),
//!    RC4a(VC, crypto_provide, len(PadC), PadC, len(IA)), RC4a(IA)`
//! 4. B→A `RC4b(VC, crypto_select, len(PadD), PadD)`, then the payload stream
//!
//! with `RC4a` keyed by `SHA1('keyA'|S|SKEY)`, `RC4b` by `SHA1('keyB'|S|SKEY)`, VC eight
//! zero bytes, pads 0..=512 random bytes. Neither end knows where the other's padding ends:
//! A scans for `RC4b(VC)`, B for `SHA1('req1'|S)`, each within 512 bytes.

use rand::Rng;
use sha1::{Digest, Sha1};

use super::dh::{KeyPair, KEY_LEN};
use super::rc4::Rc4;
use super::{MseError, CRYPTO_PLAINTEXT, CRYPTO_RC4};
use crate::id::InfoHash;

/// Longest padding (PadA..PadD) either side may send.
pub const MAX_PAD: usize = 512;
/// The verification constant.
const VC: [u8; 8] = [0; 8];

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `SHA1('req2'|SKEY)`: what the responder compares the de-obfuscated hash with.
pub fn req2(info_hash: &InfoHash) -> [u8; 20] {
    sha1(&[b"req2", info_hash.as_bytes()])
}

fn random_pad<R: Rng + ?Sized>(rng: &mut R) -> Vec<u8> {
    let mut p = vec![0u8; rng.random_range(0..=MAX_PAD)];
    rng.fill(&mut p[..]);
    p
}

/// The two ciphers of a connection, from our point of view.
#[derive(Debug)]
pub struct Ciphers {
    /// Enciphers what we send.
    pub enc: Rc4,
    /// Deciphers what we receive.
    pub dec: Rc4,
}

/// A finished handshake.
#[derive(Debug)]
pub struct Done {
    /// The torrent (SKEY): the one we dialled for, or the one the initiator's hash named.
    pub info_hash: InfoHash,
    /// The selected method: [`CRYPTO_RC4`] or [`CRYPTO_PLAINTEXT`].
    pub method: u32,
    /// The stream ciphers when RC4 was selected.
    pub ciphers: Option<Ciphers>,
    /// Payload bytes that came with the handshake, deciphered: for the responder the
    /// initiator's initial payload (IA) first, then anything after it.
    pub received: Vec<u8>,
}

/// Both roles: the queued output and the input not consumed yet.
#[derive(Debug, Default)]
struct Io {
    input: Vec<u8>,
    output: Vec<u8>,
}

impl Io {
    /// Takes the first `n` bytes of input, if there are that many.
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.input.len() < n {
            return None;
        }
        let rest = self.input.split_off(n);
        Some(std::mem::replace(&mut self.input, rest))
    }

    /// Finds `pat` starting within `max_skip` bytes; drops everything up to its end.
    /// `Ok(false)`: not yet (more input may bring it); error when it can no longer come.
    fn sync(&mut self, pat: &[u8], max_skip: usize, what: &'static str) -> Result<bool, MseError> {
        let window = &self.input[..self.input.len().min(max_skip + pat.len())];
        if let Some(at) = window.windows(pat.len()).position(|w| w == pat) {
            self.input.drain(..at + pat.len());
            return Ok(true);
        }
        if self.input.len() >= max_skip + pat.len() {
            return Err(MseError::NoSync(what));
        }
        Ok(false)
    }
}

fn keys(s: &[u8; KEY_LEN], skey: &InfoHash) -> (Rc4, Rc4) {
    let a = Rc4::mse(&sha1(&[b"keyA", s, skey.as_bytes()]));
    let b = Rc4::mse(&sha1(&[b"keyB", s, skey.as_bytes()]));
    (a, b)
}

fn be16(b: &[u8]) -> usize {
    u16::from_be_bytes([b[0], b[1]]) as usize
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[derive(Debug)]
enum IState {
    PeerKey,
    SyncVc {
        dec: Rc4,
        enc: Rc4,
        vc: [u8; 8],
    },
    Select {
        dec: Rc4,
        enc: Rc4,
    },
    PadD {
        dec: Rc4,
        enc: Rc4,
        select: u32,
        len: usize,
    },
    Done,
}

/// The dialling side (A).
#[derive(Debug)]
pub struct Initiator {
    skey: InfoHash,
    provide: u32,
    ia: Vec<u8>,
    keys: KeyPair,
    pad_c: Vec<u8>,
    io: Io,
    state: IState,
    done: Option<Done>,
}

impl Initiator {
    /// Starts a handshake for torrent `skey`, offering the methods in `provide`
    /// ([`CRYPTO_RC4`] and/or [`CRYPTO_PLAINTEXT`]), with `ia` as the initial payload
    /// (normally our BitTorrent handshake, at most 65535 bytes). Queues `Ya, PadA`.
    pub fn new<R: Rng + ?Sized>(skey: InfoHash, provide: u32, ia: &[u8], rng: &mut R) -> Self {
        let keys = KeyPair::generate(rng);
        let pad_a = random_pad(rng);
        let pad_c = random_pad(rng);
        let mut io = Io::default();
        io.output.extend_from_slice(keys.public());
        io.output.extend_from_slice(&pad_a);
        Initiator {
            skey,
            provide,
            ia: ia[..ia.len().min(u16::MAX as usize)].to_vec(),
            keys,
            pad_c,
            io,
            state: IState::PeerKey,
            done: None,
        }
    }

    /// Bytes to send now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.io.output)
    }

    /// The result, once the handshake is complete (taken: later calls return `None`).
    pub fn take_done(&mut self) -> Option<Done> {
        self.done.take()
    }

    /// Bytes received from the peer; any split of the stream is fine.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), MseError> {
        self.io.input.extend_from_slice(data);
        loop {
            let state = std::mem::replace(&mut self.state, IState::Done);
            let (next, progressed) = self.step(state)?;
            self.state = next;
            if !progressed {
                return Ok(());
            }
        }
    }

    fn step(&mut self, state: IState) -> Result<(IState, bool), MseError> {
        Ok(match state {
            IState::PeerKey => {
                let Some(yb) = self.io.take(KEY_LEN) else {
                    return Ok((IState::PeerKey, false));
                };
                let yb: [u8; KEY_LEN] = yb.try_into().expect("KEY_LEN bytes");
                let s = self.keys.shared(&yb)?;
                let (mut enc, dec) = keys(&s, &self.skey);
                let mut vc = VC;
                dec.clone().apply(&mut vc);
                let out = &mut self.io.output;
                out.extend_from_slice(&sha1(&[b"req1", &s]));
                let r3 = sha1(&[b"req3", &s]);
                out.extend(req2(&self.skey).iter().zip(r3).map(|(a, b)| a ^ b));
                let start = out.len();
                out.extend_from_slice(&VC);
                out.extend_from_slice(&self.provide.to_be_bytes());
                out.extend_from_slice(&(self.pad_c.len() as u16).to_be_bytes());
                out.extend_from_slice(&self.pad_c);
                out.extend_from_slice(&(self.ia.len() as u16).to_be_bytes());
                out.extend_from_slice(&self.ia);
                enc.apply(&mut out[start..]);
                (IState::SyncVc { dec, enc, vc }, true)
            }
            IState::SyncVc { mut dec, enc, vc } => {
                if !self.io.sync(&vc, MAX_PAD, "verification constant")? {
                    return Ok((IState::SyncVc { dec, enc, vc }, false));
                }
                dec.skip(VC.len());
                (IState::Select { dec, enc }, true)
            }
            IState::Select { mut dec, enc } => {
                let Some(mut b) = self.io.take(6) else {
                    return Ok((IState::Select { dec, enc }, false));
                };
                dec.apply(&mut b);
                let select = be32(&b);
                let len = be16(&b[4..]);
                if len > MAX_PAD {
                    return Err(MseError::PadTooLong(len));
                }
                if !matches!(select, CRYPTO_RC4 | CRYPTO_PLAINTEXT) || self.provide & select == 0 {
                    return Err(MseError::BadSelect(select));
                }
                (
                    IState::PadD {
                        dec,
                        enc,
                        select,
                        len,
                    },
                    true,
                )
            }
            IState::PadD {
                mut dec,
                enc,
                select,
                len,
            } => {
                let Some(mut pad) = self.io.take(len) else {
                    return Ok((
                        IState::PadD {
                            dec,
                            enc,
                            select,
                            len,
                        },
                        false,
                    ));
                };
                dec.apply(&mut pad);
                let mut received = std::mem::take(&mut self.io.input);
                let ciphers = (select == CRYPTO_RC4).then(|| {
                    dec.apply(&mut received);
                    Ciphers { enc, dec }
                });
                self.done = Some(Done {
                    info_hash: self.skey,
                    method: select,
                    ciphers,
                    received,
                });
                (IState::Done, false)
            }
            // Anything after the handshake is payload: the caller reads it from the stream.
            IState::Done => (IState::Done, false),
        })
    }
}

#[derive(Debug)]
enum RState {
    PeerKey,
    SyncReq1 {
        s: Box<[u8; KEY_LEN]>,
    },
    Skey {
        s: Box<[u8; KEY_LEN]>,
    },
    Provide {
        skey: InfoHash,
        dec: Rc4,
        enc: Rc4,
    },
    PadC {
        skey: InfoHash,
        dec: Rc4,
        enc: Rc4,
        provide: u32,
        len: usize,
    },
    IaLen {
        skey: InfoHash,
        dec: Rc4,
        enc: Rc4,
        provide: u32,
    },
    Ia {
        skey: InfoHash,
        dec: Rc4,
        enc: Rc4,
        provide: u32,
        len: usize,
    },
    Done,
}

/// The answering side (B).
#[derive(Debug)]
pub struct Responder {
    allowed: u32,
    torrents: Vec<InfoHash>,
    keys: KeyPair,
    pad_b: Vec<u8>,
    pad_d: Vec<u8>,
    io: Io,
    state: RState,
    done: Option<Done>,
}

impl Responder {
    /// Answers a handshake for any of `torrents` (the info-hashes we serve), selecting RC4
    /// when the peer offers it and `allowed` has it, else plaintext when both have that.
    pub fn new<R: Rng + ?Sized>(allowed: u32, torrents: Vec<InfoHash>, rng: &mut R) -> Self {
        let keys = KeyPair::generate(rng);
        let pad_b = random_pad(rng);
        let pad_d = random_pad(rng);
        Responder {
            allowed,
            torrents,
            keys,
            pad_b,
            pad_d,
            io: Io::default(),
            state: RState::PeerKey,
            done: None,
        }
    }

    /// Bytes to send now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.io.output)
    }

    /// The result, once the handshake is complete (taken: later calls return `None`).
    pub fn take_done(&mut self) -> Option<Done> {
        self.done.take()
    }

    /// Bytes received from the peer; any split of the stream is fine.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), MseError> {
        self.io.input.extend_from_slice(data);
        loop {
            let state = std::mem::replace(&mut self.state, RState::Done);
            let (next, progressed) = self.step(state)?;
            self.state = next;
            if !progressed {
                return Ok(());
            }
        }
    }

    fn step(&mut self, state: RState) -> Result<(RState, bool), MseError> {
        Ok(match state {
            RState::PeerKey => {
                let Some(ya) = self.io.take(KEY_LEN) else {
                    return Ok((RState::PeerKey, false));
                };
                let ya: [u8; KEY_LEN] = ya.try_into().expect("KEY_LEN bytes");
                let s = Box::new(self.keys.shared(&ya)?);
                self.io.output.extend_from_slice(self.keys.public());
                self.io.output.extend_from_slice(&self.pad_b);
                (RState::SyncReq1 { s }, true)
            }
            RState::SyncReq1 { s } => {
                let req1 = sha1(&[b"req1", &s[..]]);
                if !self.io.sync(&req1, MAX_PAD, "SHA1('req1', S)")? {
                    return Ok((RState::SyncReq1 { s }, false));
                }
                (RState::Skey { s }, true)
            }
            RState::Skey { s } => {
                let Some(obf) = self.io.take(20) else {
                    return Ok((RState::Skey { s }, false));
                };
                let r3 = sha1(&[b"req3", &s[..]]);
                let want: Vec<u8> = obf.iter().zip(r3).map(|(a, b)| a ^ b).collect();
                let skey = *self
                    .torrents
                    .iter()
                    .find(|ih| req2(ih)[..] == want[..])
                    .ok_or(MseError::UnknownTorrent)?;
                let (dec, enc) = keys(&s, &skey);
                (RState::Provide { skey, dec, enc }, true)
            }
            RState::Provide { skey, mut dec, enc } => {
                let Some(mut b) = self.io.take(14) else {
                    return Ok((RState::Provide { skey, dec, enc }, false));
                };
                dec.apply(&mut b);
                if b[..8] != VC {
                    return Err(MseError::BadVc);
                }
                let provide = be32(&b[8..]);
                let len = be16(&b[12..]);
                if len > MAX_PAD {
                    return Err(MseError::PadTooLong(len));
                }
                (
                    RState::PadC {
                        skey,
                        dec,
                        enc,
                        provide,
                        len,
                    },
                    true,
                )
            }
            RState::PadC {
                skey,
                mut dec,
                enc,
                provide,
                len,
            } => {
                let Some(mut pad) = self.io.take(len) else {
                    return Ok((
                        RState::PadC {
                            skey,
                            dec,
                            enc,
                            provide,
                            len,
                        },
                        false,
                    ));
                };
                dec.apply(&mut pad);
                (
                    RState::IaLen {
                        skey,
                        dec,
                        enc,
                        provide,
                    },
                    true,
                )
            }
            RState::IaLen {
                skey,
                mut dec,
                enc,
                provide,
            } => {
                let Some(mut b) = self.io.take(2) else {
                    return Ok((
                        RState::IaLen {
                            skey,
                            dec,
                            enc,
                            provide,
                        },
                        false,
                    ));
                };
                dec.apply(&mut b);
                let len = be16(&b);
                (
                    RState::Ia {
                        skey,
                        dec,
                        enc,
                        provide,
                        len,
                    },
                    true,
                )
            }
            RState::Ia {
                skey,
                mut dec,
                mut enc,
                provide,
                len,
            } => {
                let Some(mut ia) = self.io.take(len) else {
                    return Ok((
                        RState::Ia {
                            skey,
                            dec,
                            enc,
                            provide,
                            len,
                        },
                        false,
                    ));
                };
                // The initial payload is always RC4'd, whatever is selected for the rest.
                dec.apply(&mut ia);
                let common = provide & self.allowed;
                // Plaintext whenever both ends allow it, as libtorrent does by default
                // (`prefer_rc4` off): the handshake is hidden either way, and RC4 costs
                // ~3 s of CPU per GiB on each side. RC4 when it is all one side allows.
                let select = if common & CRYPTO_PLAINTEXT != 0 {
                    CRYPTO_PLAINTEXT
                } else if common & CRYPTO_RC4 != 0 {
                    CRYPTO_RC4
                } else {
                    return Err(MseError::NoCommonMethod {
                        offered: provide,
                        allowed: self.allowed,
                    });
                };
                let out = &mut self.io.output;
                let start = out.len();
                out.extend_from_slice(&VC);
                out.extend_from_slice(&select.to_be_bytes());
                out.extend_from_slice(&(self.pad_d.len() as u16).to_be_bytes());
                out.extend_from_slice(&self.pad_d);
                enc.apply(&mut out[start..]);
                let mut rest = std::mem::take(&mut self.io.input);
                let ciphers = (select == CRYPTO_RC4).then(|| {
                    dec.apply(&mut rest);
                    Ciphers { enc, dec }
                });
                ia.extend_from_slice(&rest);
                self.done = Some(Done {
                    info_hash: skey,
                    method: select,
                    ciphers,
                    received: ia,
                });
                (RState::Done, false)
            }
            RState::Done => (RState::Done, false),
        })
    }
}

#[cfg(test)]
mod tests;
