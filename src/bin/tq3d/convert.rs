//! `tq3d convert IN OUT`: any readable scene format to any writable one,
//! by extension, optionally with a report of the size, the time and the
//! render PSNR of the result against the input.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use turboquant3d::Error;
use turboquant3d::render::{metrics, orbit};
use turboquant3d::splat::formats::{self, SceneFormat, WriteOptions};
use turboquant3d::splat::scene::survives_prune;
use turboquant3d::splat::{self, CompressOptions, Scene};

use turboquant3d::format::check_distinct;

use crate::common::{
    DeviceArg, Resolution, human, json_f64, output_to, print_json, prune_tau, read_scene, report,
    sh_degree, spinner, views,
};
use crate::eval::Renderer;
use crate::scene::{EncodingArg, ply_encoding};

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The scene, in any format `tq3d` reads (told by its first bytes, else
    /// its extension): 3DGS .ply, PlayCanvas .compressed.ply, .splat, .spz,
    /// .sog (or an unpacked SOG's meta.json), .glb, .tq3s.
    input: PathBuf,
    /// Where to write, the format chosen by extension: .ply, .splat, .spz,
    /// .glb, or .tq3s (compressed with the library defaults: 3-bit SH,
    /// compact profile; `tq3d compress` has every choice). `-` is a PLY on
    /// standard output. Never the input, nor a device.
    output: PathBuf,
    /// Keep SH bands up to degree L (0..=3); lower than the input's truncates.
    #[arg(long, value_name = "L", value_parser = sh_degree)]
    sh_degree: Option<u8>,
    /// Drop Gaussians whose sigmoid(opacity) is below τ (0 ≤ τ < 1).
    #[arg(long, value_name = "TAU", value_parser = prune_tau, allow_negative_numbers = true)]
    prune_opacity: Option<f32>,
    /// PLY body encoding (PLY outputs).
    #[arg(long, value_enum, default_value_t = EncodingArg::BinaryLittleEndian)]
    encoding: EncodingArg,
    /// Also read the output back and render it and the input from orbit
    /// views: report the size, the time and the PSNR against the input.
    #[arg(long)]
    report: bool,
    /// With --report, render the output against this scene instead of the
    /// input: the original, when the input is another tool's compressed
    /// copy of it (e.g. a peer's .sog of the same capture).
    #[arg(long, value_name = "SCENE", requires = "report")]
    against: Option<PathBuf>,
    /// Orbit views for --report, 1..=1024.
    #[arg(long, default_value_t = 8, value_parser = views)]
    views: usize,
    /// Resolution of the --report views, WxH.
    #[arg(long, default_value = "256x256")]
    resolution: Resolution,
    /// Where --report renders: auto (a hardware GPU, else the CPU reference
    /// rasteriser), gpu (any adapter), cpu.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn len_of(path: &Path) -> Result<u64, Error> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })
}

/// The scene after `--sh-degree` and `--prune-opacity`.
fn select(mut scene: Scene, a: &ConvertArgs) -> Scene {
    if let Some(l) = a.sh_degree {
        scene.truncate_sh(l);
    }
    if a.prune_opacity.is_some() {
        let keep: Vec<bool> = scene
            .opacity
            .iter()
            .map(|&o| survives_prune(o, a.prune_opacity))
            .collect();
        scene.retain_indices(&keep);
    }
    scene
}

pub fn convert(a: ConvertArgs) -> Result<(), Error> {
    let out_format = match formats::output_format(&a.output) {
        Some(f @ (SceneFormat::CompressedPly | SceneFormat::Sog)) => {
            return Err(Error::InvalidArgument(format!(
                "{}: {} is read, not written; writable: {}",
                a.output.display(),
                f.name(),
                formats::WRITABLE
            )));
        }
        Some(f) => f,
        None => {
            return Err(Error::InvalidArgument(format!(
                "{}: cannot tell the output format from the extension; writable: {}",
                a.output.display(),
                formats::WRITABLE
            )));
        }
    };
    output_to(&a.output);
    let mut inputs = vec![a.input.as_path()];
    inputs.extend(a.against.as_deref());
    check_distinct(&a.output, &inputs)?;
    let in_format = formats::detect(&a.input)?;
    let quiet = a.json;
    let t0 = Instant::now();
    let original = read_scene(&a.input, quiet)?;
    let t_read = t0.elapsed();
    let scene = select(original.clone(), &a);
    let bar = spinner(format!("writing {}", a.output.display()), quiet);
    let t1 = Instant::now();
    let out_bytes = match out_format {
        SceneFormat::Tq3s => {
            splat::check_finite(&scene).map_err(|e| e.in_file(&a.input))?;
            let c = splat::compress(&scene, &CompressOptions::default())?;
            c.write(&a.output)?;
            c.size()
        }
        _ => formats::write_scene(
            &a.output,
            &scene,
            &WriteOptions {
                ply_encoding: ply_encoding(a.encoding),
            },
        )?,
    };
    let t_write = t1.elapsed();
    bar.finish_and_clear();
    let input_bytes = len_of(&a.input).unwrap_or(0);

    // --report: the output read back, rendered against the input.
    let psnr = if a.report {
        if turboquant3d::format::output::is_stdout(&a.output) {
            return Err(Error::InvalidArgument(
                "--report reads the output back, so it needs a file, not `-`".into(),
            ));
        }
        let bar = spinner("rendering the input and the output".into(), quiet);
        let back = formats::read_scene(&a.output)?;
        let (reference, reference_path) = match &a.against {
            Some(p) => (read_scene(p, true)?, p.as_path()),
            None => (original.clone(), a.input.as_path()),
        };
        splat::check_finite(&reference).map_err(|e| e.in_file(reference_path))?;
        splat::check_finite(&back).map_err(|e| e.in_file(&a.output))?;
        let cams = orbit(
            &reference.positions,
            a.views,
            a.resolution.0,
            a.resolution.1,
        );
        let renderer = Renderer::new(a.device)?;
        let want = renderer.render_all(&reference, &cams)?;
        let got = renderer.render_all(&back, &cams)?;
        bar.finish_and_clear();
        let mses = want
            .iter()
            .zip(&got)
            .map(|(x, y)| metrics::mse(x, y))
            .collect::<Result<Vec<f64>, _>>()?;
        let mean_mse = mses.iter().sum::<f64>() / mses.len().max(1) as f64;
        Some((
            metrics::psnr_from_mse(mean_mse),
            renderer.name(),
            reference_path.to_path_buf(),
        ))
    } else {
        None
    };

    if a.json {
        let mut v = json!({
            "input": a.input, "input_format": in_format.name(), "input_bytes": input_bytes,
            "output": a.output, "output_format": out_format.name(), "output_bytes": out_bytes,
            "count": scene.len(), "input_count": original.len(), "sh_degree": scene.sh_degree,
            "seconds": {"read": t_read.as_secs_f64(), "write": t_write.as_secs_f64()},
        });
        if let Some((p, renderer, against)) = &psnr {
            v["psnr_db"] = json_f64(*p, "the PSNR")?;
            v["against"] = json!(against);
            v["views"] = a.views.into();
            v["resolution"] = format!("{}x{}", a.resolution.0, a.resolution.1).into();
            v["renderer"] = renderer.clone().into();
        }
        print_json(&v);
    } else {
        report!(
            "{} ({}) -> {} ({}): {} Gaussians, SH degree {}, {} -> {} ({:.2}×); read {:.2?}, write {:.2?}",
            a.input.display(),
            in_format.name(),
            a.output.display(),
            out_format.name(),
            scene.len(),
            scene.sh_degree,
            human(input_bytes),
            human(out_bytes),
            input_bytes as f64 / out_bytes.max(1) as f64,
            t_read,
            t_write
        );
        if let Some((p, renderer, against)) = &psnr {
            report!(
                "render PSNR against {}: {p:.2} dB (mean MSE over {} orbit views at {}x{}, {renderer})",
                if a.against.is_some() {
                    against.display().to_string()
                } else {
                    "the input".to_owned()
                },
                a.views,
                a.resolution.0,
                a.resolution.1
            );
        }
    }
    Ok(())
}
