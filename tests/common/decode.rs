//! Our decode of a file against the peer's decode of the same file, shared
//! by the tests of every format the peer reads (spz, compressed.ply).

use turboquant3d::splat::Scene;
use turboquant3d::splat::scene::sigmoid;

/// Float rounding between two decoders of the same bytes.
pub fn rounding(b: f32) -> f32 {
    2e-6 * (1.0 + b.abs())
}

pub fn check(a: f32, b: f32, tol: f32, what: &str, i: usize) {
    assert!(
        (a - b).abs() <= tol,
        "{what} of Gaussian {i}: {a} vs {b} (tolerance {tol})"
    );
}

/// Every attribute of `ours` equals `peer`'s within float rounding. The
/// peer decodes alpha bytes 0 and 255 to ±∞; those rows are compared by
/// byte (ours must be finite and re-encode to the same byte). Returns the
/// number of such rows.
pub fn same_decode(ours: &Scene, peer: &Scene) -> usize {
    assert_eq!(ours.len(), peer.len(), "count");
    assert_eq!(ours.sh_degree, peer.sh_degree, "sh degree");
    let mut infinite = 0;
    for i in 0..ours.len() {
        for k in 0..3 {
            check(
                ours.positions[i][k],
                peer.positions[i][k],
                rounding(peer.positions[i][k]),
                "position",
                i,
            );
            check(
                ours.scales[i][k],
                peer.scales[i][k],
                rounding(peer.scales[i][k]),
                "log scale",
                i,
            );
            check(
                ours.dc[i][k],
                peer.dc[i][k],
                rounding(peer.dc[i][k]),
                "f_dc",
                i,
            );
        }
        for k in 0..4 {
            check(
                ours.rotations[i][k],
                peer.rotations[i][k],
                rounding(1.0),
                "rotation",
                i,
            );
        }
        let (o, p) = (ours.opacity[i], peer.opacity[i]);
        assert!(o.is_finite(), "opacity of Gaussian {i} is {o}");
        if p.is_finite() {
            check(o, p, 1e-5 * (1.0 + p.abs()), "opacity", i);
        } else {
            infinite += 1;
            let byte = if p > 0.0 { 255.0 } else { 0.0 };
            assert_eq!(
                (sigmoid(o) * 255.0).round(),
                byte,
                "opacity of Gaussian {i}: {o} vs {p}"
            );
        }
    }
    assert_eq!(ours.sh_rest.len(), peer.sh_rest.len(), "f_rest count");
    for (j, (a, b)) in ours.sh_rest.iter().zip(&peer.sh_rest).enumerate() {
        check(*a, *b, rounding(*b), "f_rest", j / ours.rest_dim());
    }
    infinite
}
