//! The norm-separation bound against measurement: render the demo-like
//! scene and its SH-compressed copy (exact profile, so only SH-rest
//! changes) with the CPU reference, and compare the measured image MSE with
//! the bound and the estimate predicted from the uncompressed scene alone.

use turboquant3d::Codebook;
use turboquant3d::render::{cpu, metrics, orbit, predict};
use turboquant3d::splat::container::Profile;
use turboquant3d::splat::synth;
use turboquant3d::splat::{self, CompressOptions};

#[test]
fn predicted_image_mse_bounds_and_estimates_the_measured_one() {
    let scene = synth::generate(&synth::SynthConfig {
        count: 30_000,
        sh_degree: 3,
        seed: 1,
    });
    let views = orbit(&scene.positions, 3, 128, 96);
    let gamma2: Vec<f32> = (0..scene.len())
        .map(|i| scene.rest(i).iter().map(|v| v * v).sum())
        .collect();
    let bg = [0.0; 3];
    let mut sums = Vec::new();
    let mut originals = Vec::new();
    for cam in &views {
        let splats = cpu::preprocess_all(&scene, cam);
        let order = cpu::depth_order(&splats);
        sums.push(predict::weight_sums(
            &splats, &order, cam.width, cam.height, &gamma2,
        ));
        originals.push(cpu::rasterize(&splats, &order, cam.width, cam.height, bg));
    }
    for b in 1..=4u32 {
        let opts = CompressOptions {
            profile: Profile::Exact,
            sh_bits: b,
            ..Default::default()
        };
        let bytes = splat::compress(&scene, &opts).unwrap().to_bytes().unwrap();
        let back = splat::decompress(&bytes, std::path::Path::new("p.tq3s")).unwrap();
        let dist = Codebook::get(45, b).unwrap().distortion();
        let (mut measured, mut bound, mut estimate) = (0.0, 0.0, 0.0);
        for (k, cam) in views.iter().enumerate() {
            let img = cpu::render(&back, cam, bg);
            measured += metrics::mse(&originals[k], &img).unwrap();
            let p = predict::predict_mse(sums[k], (cam.width * cam.height) as u64, dist);
            bound += p.bound;
            estimate += p.estimate;
        }
        println!(
            "b = {b}: measured {measured:.3e}, estimate {estimate:.3e} ({:.2}×), bound {bound:.3e} ({:.2}×)",
            estimate / measured,
            bound / measured
        );
        assert!(
            measured <= bound,
            "b = {b}: measured {measured} above the bound {bound}"
        );
        if b >= 2 {
            let r = estimate / measured;
            assert!((0.5..=2.0).contains(&r), "b = {b}: estimate/measured = {r}");
        }
    }
}
