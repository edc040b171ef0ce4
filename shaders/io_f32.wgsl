// Vector data as f32: the I/O variant every device runs. Prepended to a
// kernel family, which reads and writes vectors only through these.
@group(0) @binding(4) var<storage, read_write> data: array<f32>;

fn load_data(i: u32) -> f32 {
    return data[i];
}

fn store_data(i: u32, v: f32) {
    data[i] = v;
}
