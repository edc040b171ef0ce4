// Vector data as f16: half the bytes of f32 moved, on devices with
// Features::SHADER_F16. Arithmetic stays f32; values are widened on load
// (exact) and rounded to the nearest f16 on store.
enable f16;

@group(0) @binding(4) var<storage, read_write> data: array<f16>;

fn load_data(i: u32) -> f32 {
    return f32(data[i]);
}

fn store_data(i: u32, v: f32) {
    data[i] = f16(v);
}
