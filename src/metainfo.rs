//! metainfo (to be written).
