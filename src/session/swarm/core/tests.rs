//! The core's decisions, driven by hand: no sockets, no tasks, no simulated network.

use super::*;

#[test]
fn both_ends_keep_the_same_duplicate() {
    let (a, b) = (crate::id::Id20([1; 20]), crate::id::Id20([2; 20]));
    // a dialled b and b dialled a. At a, "outgoing" is a->b; at b, it is b->a.
    // Whichever arrived second at each end, both keep a->b (a's id is smaller).
    // Is the connection an end keeps the one it dialled, given which came first?
    let keeps_outgoing = |ours, theirs, first_outgoing: bool| {
        let new_kept = keep_new_duplicate(ours, theirs, !first_outgoing, first_outgoing);
        new_kept != first_outgoing
    };
    for first_outgoing in [true, false] {
        assert!(
            keeps_outgoing(&a, &b, first_outgoing),
            "a keeps what it dialled"
        );
        assert!(
            !keeps_outgoing(&b, &a, first_outgoing),
            "b keeps what a dialled"
        );
    }
    // Two connections in the same direction (dialled twice): the old one stays.
    assert!(!keep_new_duplicate(&a, &b, true, true));
    assert!(!keep_new_duplicate(&a, &b, false, false));
}
