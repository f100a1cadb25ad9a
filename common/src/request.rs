//! Checks the helper makes on every submission record before touching data.
//!
//! Service-specific rules (key sizes, block multiples) live in each service's
//! `proto` module; this is what holds for every service. Total: any record
//! gives `Ok` or a [`Status`].

use super::abi::{Extent, Sqe, Status};

/// The extents of a request, checked against a data area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedExtents {
    /// Key material.
    pub key: Extent,
    /// Input data.
    pub input: Extent,
    /// Output data.
    pub output: Extent,
    /// Auxiliary data.
    pub aux: Extent,
    /// Output is the input (the operation runs in place).
    pub in_place: bool,
}

/// Checks the service-independent rules of `sqe` for a data area of
/// `data_size` bytes: reserved flags clear, every extent inside the area,
/// output either exactly the input or disjoint from it, and output disjoint
/// from the key and the auxiliary data.
pub const fn check_sqe(sqe: &Sqe, data_size: u64) -> Result<CheckedExtents, Status> {
    if sqe.flags != 0 {
        return Err(Status::BadFlags);
    }
    let (k, i, o, a) = (sqe.key, sqe.input, sqe.output, sqe.aux);
    if !k.fits(data_size) || !i.fits(data_size) || !o.fits(data_size) || !a.fits(data_size) {
        return Err(Status::BadExtent);
    }
    let in_place = i.off == o.off && i.len == o.len && i.len != 0;
    if (!in_place && i.overlaps(&o)) || o.overlaps(&k) || o.overlaps(&a) {
        return Err(Status::BadExtent);
    }
    Ok(CheckedExtents {
        key: k,
        input: i,
        output: o,
        aux: a,
        in_place,
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn sqe(input: Extent, output: Extent) -> Sqe {
        Sqe {
            input,
            output,
            key: Extent::new(0, 32),
            ..Sqe::ZERO
        }
    }

    #[test]
    fn rules() {
        let size = 1 << 20;
        assert!(check_sqe(&sqe(Extent::new(4096, 4096), Extent::new(8192, 4096)), size).is_ok());
        assert!(
            check_sqe(&sqe(Extent::new(4096, 4096), Extent::new(4096, 4096)), size)
                .unwrap()
                .in_place
        );
        let bad = [
            (Extent::new(4096, 4096), Extent::new(6000, 4096)),
            (Extent::new(size - 10, 11), Extent::new(0, 0)),
            (Extent::new(u64::MAX, 2), Extent::new(8192, 4096)),
            (Extent::new(4096, 4096), Extent::new(16, 4096)),
        ];
        for (i, o) in bad {
            assert_eq!(
                check_sqe(&sqe(i, o), size),
                Err(Status::BadExtent),
                "{i:?} {o:?}"
            );
        }
        let mut s = sqe(Extent::new(4096, 16), Extent::new(4096, 16));
        s.flags = 1;
        assert_eq!(check_sqe(&s, size), Err(Status::BadFlags));
    }
}
