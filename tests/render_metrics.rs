//! Image metrics (MSE, PSNR, the 3DGS SSIM) and PNG I/O, each checked
//! against an independent computation written out here.

mod common;

use common::data::Rng;
use turboquant3d::Error;
use turboquant3d::render::Image;
use turboquant3d::render::image::{read_png, write_png};
use turboquant3d::render::metrics::{mse, psnr, psnr_from_mse, ssim};

#[test]
fn png_round_trip_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.png");
    let (w, h) = (7u32, 5u32);
    let mut rng = Rng(3);
    let data: Vec<f32> = (0..w * h * 3)
        .map(|_| rng.range(-0.3, 1.3) as f32)
        .collect();
    let img = Image {
        width: w,
        height: h,
        data,
    };
    write_png(&path, &img).unwrap();
    let back = read_png(&path).unwrap();
    assert_eq!((back.width, back.height), (w, h));
    for (a, b) in img.data.iter().zip(&back.data) {
        let want = (a.clamp(0.0, 1.0) * 255.0).round() / 255.0;
        assert_eq!(*b, want, "{a}");
    }
    // Re-writing the read image is lossless.
    write_png(&path, &back).unwrap();
    assert_eq!(read_png(&path).unwrap(), back);

    // RGBA: alpha ignored.
    let rgba_path = dir.path().join("rgba.png");
    {
        let file = std::fs::File::create(&rgba_path).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 2, 1);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(&[255, 0, 51, 7, 0, 102, 255, 200])
            .unwrap();
        wr.finish().unwrap();
    }
    let rgba = read_png(&rgba_path).unwrap();
    assert_eq!(rgba.data, vec![1.0, 0.0, 0.2, 0.0, 0.4, 1.0]);

    // 16-bit grey is refused; a missing or garbage file errors naming it.
    let grey_path = dir.path().join("grey16.png");
    {
        let file = std::fs::File::create(&grey_path).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 1, 1);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Sixteen);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(&[1, 2]).unwrap();
        wr.finish().unwrap();
    }
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not a png at all").unwrap();
    for p in [grey_path, garbage, dir.path().join("missing.png")] {
        let e = read_png(&p).unwrap_err().to_string();
        assert!(e.contains(p.file_name().unwrap().to_str().unwrap()), "{e}");
    }
    let bad = Image {
        width: 2,
        height: 2,
        data: vec![0.0; 5],
    };
    assert!(matches!(write_png(&path, &bad), Err(Error::Shape(_))));
}

fn constant(w: u32, h: u32, v: f32) -> Image {
    Image {
        width: w,
        height: h,
        data: vec![v; (w * h * 3) as usize],
    }
}

fn random_image(w: u32, h: u32, rng: &mut Rng, lo: f64, hi: f64) -> Image {
    Image {
        width: w,
        height: h,
        data: (0..w * h * 3).map(|_| rng.range(lo, hi) as f32).collect(),
    }
}

#[test]
fn mse_and_psnr() {
    let (a, b) = (constant(4, 3, 0.5), constant(4, 3, 0.6));
    let want = ((0.6f32 as f64) - 0.5).powi(2);
    assert!((mse(&a, &b).unwrap() - want).abs() < 1e-15);
    assert!((psnr(&a, &b).unwrap() - 10.0 * (1.0 / want).log10()).abs() < 1e-9);
    assert!((psnr_from_mse(0.01) - 20.0).abs() < 1e-12);
    assert_eq!(psnr(&a, &a).unwrap(), f64::INFINITY);
    // Clamped to [0, 1] first.
    assert_eq!(
        mse(&constant(2, 2, 1.7), &constant(2, 2, 1.0)).unwrap(),
        0.0
    );
    assert_eq!(
        mse(&constant(2, 2, -0.5), &constant(2, 2, 0.5)).unwrap(),
        0.25
    );
    // Size mismatches are errors, not panics.
    let c = constant(3, 4, 0.5);
    assert!(matches!(mse(&a, &c), Err(Error::Shape(_))));
    assert!(matches!(psnr(&a, &c), Err(Error::Shape(_))));
    assert!(matches!(ssim(&a, &c), Err(Error::Shape(_))));
    let broken = Image {
        width: 4,
        height: 3,
        data: vec![0.0; 10],
    };
    assert!(matches!(mse(&a, &broken), Err(Error::Shape(_))));
}

/// SSIM written directly: an 11×11 double loop per pixel, zero outside.
fn naive_ssim(a: &Image, b: &Image) -> f64 {
    let g: Vec<f64> = (0..11)
        .map(|i| (-((i as f64 - 5.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let gs: f64 = g.iter().sum();
    let (w, h) = (a.width as i64, a.height as i64);
    let at = |img: &Image, x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            img.data[3 * (y * w + x) as usize + c].clamp(0.0, 1.0) as f64
        }
    };
    let mut total = 0.0;
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (mut mx, mut my, mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for v in -5..=5i64 {
                    for u in -5..=5i64 {
                        let wt = g[(u + 5) as usize] * g[(v + 5) as usize] / (gs * gs);
                        let (p, q) = (at(a, x + u, y + v, c), at(b, x + u, y + v, c));
                        mx += wt * p;
                        my += wt * q;
                        xx += wt * p * p;
                        yy += wt * q * q;
                        xy += wt * p * q;
                    }
                }
                let (c1, c2) = (1e-4, 9e-4);
                let (sx, sy, sxy) = (xx - mx * mx, yy - my * my, xy - mx * my);
                total += (2.0 * mx * my + c1) * (2.0 * sxy + c2)
                    / ((mx * mx + my * my + c1) * (sx + sy + c2));
            }
        }
    }
    total / (3 * w * h) as f64
}

#[test]
fn ssim_matches_a_naive_implementation() {
    let mut rng = Rng(21);
    for (w, h) in [(13, 9), (20, 17), (4, 6), (1, 1)] {
        let a = random_image(w, h, &mut rng, -0.2, 1.2);
        let b = random_image(w, h, &mut rng, -0.2, 1.2);
        let got = ssim(&a, &b).unwrap();
        let want = naive_ssim(&a, &b);
        assert!((got - want).abs() < 1e-12, "{w}×{h}: {got} vs {want}");
        assert!((ssim(&b, &a).unwrap() - got).abs() < 1e-12, "symmetric");
        if w * h >= 100 {
            assert!(got < 0.9, "{w}×{h}: independent noise scored {got}");
        }
    }
}

#[test]
fn ssim_of_identical_and_offset_images() {
    let mut rng = Rng(5);
    let a = random_image(24, 18, &mut rng, 0.0, 0.8);
    assert!((ssim(&a, &a).unwrap() - 1.0).abs() < 1e-12);
    // Values above 1 clamp to the same image.
    let mut a_hi = a.clone();
    a_hi.data[0] = 1.5;
    let mut a_one = a.clone();
    a_one.data[0] = 1.0;
    assert!((ssim(&a_hi, &a_one).unwrap() - 1.0).abs() < 1e-12);
    // A constant offset keeps the structure but changes the means: < 1.
    let b = Image {
        data: a.data.iter().map(|v| v + 0.1).collect(),
        ..a.clone()
    };
    let s = ssim(&a, &b).unwrap();
    assert!(s < 0.999 && s > 0.5, "{s}");
    // A larger offset scores lower.
    let c = Image {
        data: a.data.iter().map(|v| v + 0.2).collect(),
        ..a.clone()
    };
    assert!(ssim(&a, &c).unwrap() < s);
}
