//! Pinhole cameras in the 3DGS / COLMAP convention: camera space has x to
//! the right, y down and z forward (into the scene); a pixel (i, j) is
//! sampled at the point (i, j), and a camera-space point p projects to
//! (fx·p.x/p.z + cx, fy·p.y/p.z + cy) with cx = (W − 1)/2, cy = (H − 1)/2,
//! as the reference rasteriser's `ndc2Pix` does.

use std::path::Path;

use glam::{Mat3, Vec3};

use crate::{Error, Result};

/// One view.
#[derive(Debug, Clone, PartialEq)]
pub struct Camera {
    /// A name (the `img_name` of cameras.json, or `orbit_000`…).
    pub name: String,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Focal lengths in pixels.
    pub fx: f32,
    pub fy: f32,
    /// Principal point in pixels.
    pub cx: f32,
    pub cy: f32,
    /// World → camera rotation (rows are the camera axes in world space).
    pub rotation: Mat3,
    /// World → camera translation: p_cam = rotation·p + translation.
    pub translation: Vec3,
}

impl Camera {
    /// A camera at `eye` looking at `target`, with world "up" `up`, a
    /// vertical field of view `fov_y` (radians) and the given size. Camera
    /// y points down, opposite to `up`.
    pub fn look_at(
        name: String,
        eye: Vec3,
        target: Vec3,
        up: Vec3,
        fov_y: f32,
        width: u32,
        height: u32,
    ) -> Camera {
        let z = (target - eye).normalize();
        let x = (-up).cross(z).normalize();
        let y = z.cross(x);
        let rotation = Mat3::from_cols(x, y, z).transpose();
        let fy = 0.5 * height as f32 / (0.5 * fov_y).tan();
        Camera {
            name,
            width,
            height,
            fx: fy,
            fy,
            cx: (width as f32 - 1.0) * 0.5,
            cy: (height as f32 - 1.0) * 0.5,
            rotation,
            translation: -(rotation * eye),
        }
    }

    /// The camera centre in world space.
    pub fn position(&self) -> Vec3 {
        -(self.rotation.transpose() * self.translation)
    }

    /// World → camera space.
    pub fn to_camera(&self, p: Vec3) -> Vec3 {
        self.rotation * p + self.translation
    }

    /// tan of half the horizontal and vertical fields of view, as the
    /// reference rasteriser's `tanfovx`, `tanfovy`.
    pub fn tan_half_fov(&self) -> (f32, f32) {
        (
            0.5 * self.width as f32 / self.fx,
            0.5 * self.height as f32 / self.fy,
        )
    }

    /// A copy at another resolution, with the focal lengths scaled so the
    /// field of view is unchanged.
    pub fn resized(&self, width: u32, height: u32) -> Camera {
        let (sx, sy) = (
            width as f32 / self.width as f32,
            height as f32 / self.height as f32,
        );
        Camera {
            width,
            height,
            fx: self.fx * sx,
            fy: self.fy * sy,
            cx: (width as f32 - 1.0) * 0.5,
            cy: (height as f32 - 1.0) * 0.5,
            ..self.clone()
        }
    }
}

/// A sphere that holds most of a scene: the centre is the mean position,
/// the radius the 90th percentile of the distances to it (so a sparse
/// background does not push the cameras away from the subject).
pub fn bounding_sphere(positions: &[[f32; 3]]) -> (Vec3, f32) {
    if positions.is_empty() {
        return (Vec3::ZERO, 1.0);
    }
    let sum: glam::DVec3 = positions
        .iter()
        .map(|p| glam::DVec3::new(p[0] as f64, p[1] as f64, p[2] as f64))
        .sum();
    let c = (sum / positions.len() as f64).as_vec3();
    let mut d: Vec<f32> = positions
        .iter()
        .map(|p| (Vec3::from(*p) - c).length())
        .collect();
    let k = (d.len() * 9 / 10).min(d.len() - 1);
    let (_, r, _) = d.select_nth_unstable_by(k, f32::total_cmp);
    (c, r.max(1e-6))
}

/// `n` views evenly spaced on a circle around the scene's bounding sphere,
/// 20° above its equator (up is −y, as in COLMAP captures), at 2.2 radii,
/// with a 50° vertical field of view.
pub fn orbit(positions: &[[f32; 3]], n: usize, width: u32, height: u32) -> Vec<Camera> {
    let (c, r) = bounding_sphere(positions);
    let up = Vec3::new(0.0, -1.0, 0.0);
    let elev = 20f32.to_radians();
    (0..n)
        .map(|k| {
            let a = std::f32::consts::TAU * k as f32 / n as f32;
            let dir = Vec3::new(a.cos() * elev.cos(), -elev.sin(), a.sin() * elev.cos());
            Camera::look_at(
                format!("orbit_{k:03}"),
                c + dir * (2.2 * r),
                c,
                up,
                50f32.to_radians(),
                width,
                height,
            )
        })
        .collect()
}

/// Reads the original 3DGS `cameras.json`: a list of
/// `{id, img_name, width, height, position, rotation, fx, fy}` where
/// `position` is the camera centre and `rotation` the camera-to-world
/// rotation (rows of a 3×3 matrix), as written by 3DGS `camera_to_JSON`.
pub fn load_cameras_json(path: &Path) -> Result<Vec<Camera>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_cameras_json(&text, path)
}

/// [`load_cameras_json`] on text (`path` names it in errors).
pub fn parse_cameras_json(text: &str, path: &Path) -> Result<Vec<Camera>> {
    let bad = |field: String, why: String| Error::format(path, field, why);
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad("JSON".into(), e.to_string()))?;
    let list = v
        .as_array()
        .ok_or_else(|| bad("top level".into(), "expected a list of cameras".into()))?;
    if list.is_empty() {
        return Err(bad(
            "top level".into(),
            "the list of cameras is empty".into(),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(k, c)| {
            let num = |key: &str| -> Result<f64> {
                c.get(key)
                    .and_then(|x| x.as_f64())
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        bad(
                            format!("camera {k}: {key}"),
                            "missing or not a finite number".into(),
                        )
                    })
            };
            let (w, h) = (num("width")?, num("height")?);
            if !(1.0..=65536.0).contains(&w)
                || !(1.0..=65536.0).contains(&h)
                || w.fract() != 0.0
                || h.fract() != 0.0
            {
                return Err(bad(
                    format!("camera {k}: width/height"),
                    format!("{w}×{h} is not a valid image size"),
                ));
            }
            let (fx, fy) = (num("fx")?, num("fy")?);
            if fx <= 0.0 || fy <= 0.0 {
                return Err(bad(
                    format!("camera {k}: fx/fy"),
                    "focal lengths must be positive".into(),
                ));
            }
            if !(fx as f32).is_finite() || !(fy as f32).is_finite() {
                return Err(bad(
                    format!("camera {k}: fx/fy"),
                    format!("{fx}, {fy}: beyond the range of f32"),
                ));
            }
            let vec3 = |x: Option<&serde_json::Value>, what: &str| -> Result<Vec3> {
                let a = x
                    .and_then(|x| x.as_array())
                    .filter(|a| a.len() == 3)
                    .ok_or_else(|| {
                        bad(format!("camera {k}: {what}"), "expected 3 numbers".into())
                    })?;
                let f: Vec<f32> = a
                    .iter()
                    .filter_map(|x| x.as_f64())
                    .map(|x| x as f32)
                    .filter(|x| x.is_finite())
                    .collect();
                if f.len() != 3 {
                    return Err(bad(
                        format!("camera {k}: {what}"),
                        "expected 3 finite numbers".into(),
                    ));
                }
                Ok(Vec3::new(f[0], f[1], f[2]))
            };
            let pos = vec3(c.get("position"), "position")?;
            let rows = c
                .get("rotation")
                .and_then(|r| r.as_array())
                .filter(|r| r.len() == 3)
                .ok_or_else(|| {
                    bad(
                        format!("camera {k}: rotation"),
                        "expected a 3×3 matrix".into(),
                    )
                })?;
            let r0 = vec3(rows.first(), "rotation row 0")?;
            let r1 = vec3(rows.get(1), "rotation row 1")?;
            let r2 = vec3(rows.get(2), "rotation row 2")?;
            // A rotation's entries lie on [−1, 1] (a little slack for
            // rounding in the writer).
            for (i, r) in [r0, r1, r2].iter().enumerate() {
                if r.abs().max_element() > 1.001 {
                    return Err(bad(
                        format!("camera {k}: rotation row {i}"),
                        format!("{r} has an entry outside [-1, 1]: not a rotation"),
                    ));
                }
            }
            // camera-to-world with these rows; world-to-camera is its transpose.
            let c2w = Mat3::from_cols(r0, r1, r2).transpose();
            let rotation = c2w.transpose();
            let name = c
                .get("img_name")
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("camera_{k:03}"));
            let translation = -(rotation * pos);
            if !translation.is_finite() {
                return Err(bad(
                    format!("camera {k}: position"),
                    format!("{pos} is too far out to be projected in f32"),
                ));
            }
            Ok(Camera {
                name,
                width: w as u32,
                height: h as u32,
                fx: fx as f32,
                fy: fy as f32,
                cx: (w as f32 - 1.0) * 0.5,
                cy: (h as f32 - 1.0) * 0.5,
                rotation,
                translation,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_at_puts_the_target_at_the_principal_point() {
        let cam = Camera::look_at(
            "t".into(),
            Vec3::new(3.0, -1.0, 2.0),
            Vec3::new(0.5, 0.2, -0.3),
            Vec3::NEG_Y,
            1.0,
            64,
            48,
        );
        let p = cam.to_camera(Vec3::new(0.5, 0.2, -0.3));
        assert!(p.x.abs() < 1e-5 && p.y.abs() < 1e-5 && p.z > 0.0);
        assert!((cam.position() - Vec3::new(3.0, -1.0, 2.0)).length() < 1e-5);
        // A point above the target (world up = −y) appears above: smaller
        // image y.
        let above = cam.to_camera(Vec3::new(0.5, -0.8, -0.3));
        assert!(above.y < 0.0);
    }

    #[test]
    fn cameras_json_round_trip_of_a_known_camera() {
        // Camera at (1, 2, 3) looking down world +z with identity rotation.
        let text = r#"[{"id": 0, "img_name": "a", "width": 100, "height": 50,
            "position": [1, 2, 3], "rotation": [[1,0,0],[0,1,0],[0,0,1]], "fx": 80, "fy": 70}]"#;
        let cams = parse_cameras_json(text, Path::new("cameras.json")).unwrap();
        assert_eq!(cams.len(), 1);
        let c = &cams[0];
        assert_eq!((c.width, c.height, c.fx, c.fy), (100, 50, 80.0, 70.0));
        assert!((c.to_camera(Vec3::new(1.0, 2.0, 4.0)) - Vec3::new(0.0, 0.0, 1.0)).length() < 1e-6);
        let e = parse_cameras_json("[{\"width\": 1}]", Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.json") && e.contains("camera 0"), "{e}");
    }
}
