//! bencode (to be written).
