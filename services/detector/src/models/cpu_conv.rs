//! Convolution on the CPU, fused with its bias and activation.
//!
//! candle's generic CPU convolution re-orders the kernel and converts the input to NHWC on
//! every call, builds its im2col tiles in fresh buffers, scatters the GEMM result back to
//! NCHW element by element, and leaves the bias and the SiLU to two more passes over the
//! output. A detector runs the same ~60 convolutions on every frame, so this path does the
//! fixed work once, at load: the kernel is kept as the `[c_out, c_in * k * k]` matrix the
//! GEMM reads. Per call, each layer takes the cheapest strategy its shape allows:
//!
//! - 1x1, stride 1, no padding: the input planes already are the `[c_in, h * w]` right-hand
//!   matrix, so the GEMM reads them in place (no copy at all);
//! - any other kernel: the input is unfolded (im2col) a band of output rows at a time into
//!   one reused buffer sized to stay in the core's L2 cache, and each band's GEMM writes
//!   its columns straight into the NCHW output.
//!
//! Then one pass per output plane adds the bias and applies SiLU with a polynomial `exp`
//! that the compiler vectorises (the standard library's `exp` is a scalar call), compiled
//! for the widest vector unit the CPU has (AVX-512, AVX2) and chosen at run time.
//!
//! The GEMM is the `gemm` crate's (the one candle uses), with its AVX-512 kernels enabled.
//! Layer timings can be collected with [`profile`].

use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;
use serde::Serialize;

/// The activation applied after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None (the head's last convolutions).
    Identity,
    /// `x * sigmoid(x)`.
    Silu,
}

/// A convolution with its kernel laid out for the GEMM.
#[derive(Debug, Clone)]
pub struct CpuConv {
    name: String,
    /// `[c_out, c_in * k * k]`, row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    padding: usize,
    activation: Activation,
}

/// Target size of one band of the im2col buffer: half of a 2 MB L2 cache, in floats.
const BAND_FLOATS: usize = 256 * 1024;
/// The fewest output pixels a row band may have (see [`CpuConv::strategy`]).
const MIN_BAND_COLUMNS: usize = 256;

thread_local! {
    /// The im2col buffer, reused by every layer that runs on this thread.
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl CpuConv {
    /// Builds from a `[c_out, c_in, k, k]` kernel and a bias of `c_out` values (any shape).
    pub fn new(
        name: &str,
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        padding: usize,
        activation: Activation,
    ) -> candle_core::Result<Self> {
        let (c_out, c_in, k, k2) = weight.dims4()?;
        if k != k2 {
            candle_core::bail!("{name}: square kernels only, got {k}x{k2}");
        }
        if stride == 0 {
            candle_core::bail!("{name}: stride must be at least 1");
        }
        let bias = bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if bias.len() != c_out {
            candle_core::bail!("{name}: {} bias values for {c_out} channels", bias.len());
        }
        Ok(Self {
            name: name.to_string(),
            weight: weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            bias,
            c_in,
            c_out,
            k,
            stride,
            padding,
            activation,
        })
    }

    fn out_size(&self, size: usize) -> candle_core::Result<usize> {
        let padded = size + 2 * self.padding;
        if padded < self.k {
            candle_core::bail!("{}: input of {size} is smaller than the kernel", self.name);
        }
        Ok((padded - self.k) / self.stride + 1)
    }

    /// Runs on a contiguous or narrowed `[batch, c_in, h, w]` f32 tensor on the CPU.
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let started = Instant::now();
        let (batch, c, h, w) = xs.dims4()?;
        if c != self.c_in {
            candle_core::bail!("{}: {c} input channels, expected {}", self.name, self.c_in);
        }
        let (ho, wo) = (self.out_size(h)?, self.out_size(w)?);
        let xs = xs.contiguous()?.to_dtype(DType::F32)?;
        let (storage, layout) = xs.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("{}: the CPU convolution got a device tensor", self.name);
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: strided input", self.name)))?;
        let input = &cpu.as_slice::<f32>()?[start..end];

        let plane_out = ho * wo;
        let mut out = vec![0f32; batch * self.c_out * plane_out];
        let spent = Phases::default();
        let strategy = self.strategy(ho, wo);
        for (image, dst) in input
            .chunks_exact(c * h * w)
            .zip(out.chunks_exact_mut(self.c_out * plane_out))
        {
            let shape = Shape { h, w, ho, wo };
            match strategy {
                Strategy::RowBands { rows } => self.by_row_bands(image, shape, rows, dst, &spent),
                Strategy::ChannelSplit => self.by_channel_split(image, shape, dst, &spent),
            }
        }
        drop(storage);
        let result = Tensor::from_vec(out, (batch, self.c_out, ho, wo), xs.device());
        if PROFILE.with(|log| log.borrow().is_some()) {
            self.record(batch, (ho, wo), strategy, &spent, started.elapsed());
        }
        result
    }

    /// GEMM depth: one row of the unfolded input per input channel and kernel tap.
    fn depth(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// 1x1 stride-1 convolutions read the input planes as the GEMM's right-hand matrix.
    fn reads_input_in_place(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.padding == 0
    }

    /// Large outputs are split into bands of output rows, one task each (unfold the band,
    /// multiply, bias + activation, all on one core while the band is in its cache). A band
    /// needs at least [`MIN_BAND_COLUMNS`] output pixels, or the kernel matrix, which every
    /// band's GEMM packs again, costs more than it saves. Outputs too small for two bands per
    /// thread (the 20x20 and some 40x40 layers) are unfolded once and split by output
    /// channel instead.
    fn strategy(&self, ho: usize, wo: usize) -> Strategy {
        let columns = (BAND_FLOATS / self.depth()).max(MIN_BAND_COLUMNS);
        let rows = columns.div_ceil(wo).clamp(1, ho);
        if ho.div_ceil(rows) >= 2 * rayon::current_num_threads() {
            Strategy::RowBands { rows }
        } else {
            Strategy::ChannelSplit
        }
    }

    fn by_row_bands(
        &self,
        image: &[f32],
        shape: Shape,
        rows: usize,
        dst: &mut [f32],
        spent: &Phases,
    ) {
        let plane_out = shape.ho * shape.wo;
        let depth = self.depth();
        let dst = SharedOutput::new(dst);
        (0..shape.ho.div_ceil(rows))
            .into_par_iter()
            .for_each(|band| {
                let oys = band * rows..((band + 1) * rows).min(shape.ho);
                let (n0, n) = (oys.start * shape.wo, oys.len() * shape.wo);
                COLUMNS.with(|cell| {
                    let mut columns = cell.borrow_mut();
                    let t0 = Instant::now();
                    let (rhs, rhs_stride) = if self.reads_input_in_place() {
                        (&image[n0..], plane_out)
                    } else {
                        columns.resize(depth * n, 0.0);
                        self.im2col(image, shape, oys, &mut columns[..depth * n]);
                        (&columns[..depth * n], n)
                    };
                    let t1 = Instant::now();
                    // SAFETY: bands cover disjoint output rows, hence disjoint columns
                    // `n0..n0 + n` of every output plane; no other task touches them.
                    let block = unsafe { dst.columns(n0, n, self.c_out, plane_out) };
                    gemm_into(block, &self.weight, rhs, rhs_stride, (self.c_out, n, depth));
                    let t2 = Instant::now();
                    for (c, b) in self.bias.iter().enumerate() {
                        // SAFETY: as above, this task's own columns of plane `c`.
                        let values = unsafe { dst.row(c * plane_out + n0, n) };
                        bias_activation(values, *b, self.activation);
                    }
                    spent.add(t1 - t0, t2 - t1, t2.elapsed());
                });
            });
    }

    fn by_channel_split(&self, image: &[f32], shape: Shape, dst: &mut [f32], spent: &Phases) {
        let plane_out = shape.ho * shape.wo;
        let depth = self.depth();
        COLUMNS.with(|cell| {
            let mut columns = cell.borrow_mut();
            let t0 = Instant::now();
            let rhs: &[f32] = if self.reads_input_in_place() {
                image
            } else {
                columns.resize(depth * plane_out, 0.0);
                let unfolded = &mut columns[..depth * plane_out];
                // One task per input channel's taps.
                unfolded
                    .par_chunks_mut(self.k * self.k * plane_out)
                    .enumerate()
                    .for_each(|(ci, taps)| {
                        self.im2col_channel(image, shape, 0..shape.ho, ci, taps)
                    });
                unfolded
            };
            spent.add(t0.elapsed(), Duration::ZERO, Duration::ZERO);
            let threads = rayon::current_num_threads();
            // Whole multiples of the GEMM's 16-row micro-tile.
            let chunk = self.c_out.div_ceil(threads).div_ceil(16) * 16;
            dst.par_chunks_mut(chunk * plane_out)
                .enumerate()
                .for_each(|(i, planes)| {
                    let t1 = Instant::now();
                    let m = planes.len() / plane_out;
                    let lhs = &self.weight[i * chunk * depth..];
                    let block = OutputBlock::whole(planes, plane_out);
                    gemm_into(block, lhs, rhs, plane_out, (m, plane_out, depth));
                    let t2 = Instant::now();
                    for (values, b) in planes
                        .chunks_exact_mut(plane_out)
                        .zip(&self.bias[i * chunk..])
                    {
                        bias_activation(values, *b, self.activation);
                    }
                    spent.add(Duration::ZERO, t2 - t1, t2.elapsed());
                });
        });
    }

    /// Unfolds output rows `oys` of one image: row `(ci, ky, kx)` of `columns` holds, for
    /// each output pixel of the band, the input value under that kernel tap (0 in the
    /// padding).
    fn im2col(&self, image: &[f32], shape: Shape, oys: Range<usize>, columns: &mut [f32]) {
        let taps = self.k * self.k * oys.len() * shape.wo;
        for (ci, rows) in columns.chunks_exact_mut(taps).enumerate() {
            self.im2col_channel(image, shape, oys.clone(), ci, rows);
        }
    }

    /// The `k * k` unfolded rows of input channel `ci` for output rows `oys`.
    fn im2col_channel(
        &self,
        image: &[f32],
        Shape { h, w, wo, .. }: Shape,
        oys: Range<usize>,
        ci: usize,
        taps: &mut [f32],
    ) {
        let (k, s, p) = (self.k, self.stride, self.padding);
        let plane = &image[ci * h * w..(ci + 1) * h * w];
        for (tap, row) in taps.chunks_exact_mut(oys.len() * wo).enumerate() {
            let (ky, kx) = (tap / k, tap % k);
            // Output columns whose input column `ox * s + kx - p` is inside the image.
            let ox_lo = p.saturating_sub(kx).div_ceil(s).min(wo);
            let ox_hi = ((w + p).saturating_sub(kx)).div_ceil(s).clamp(ox_lo, wo);
            for (oy, out) in oys.clone().zip(row.chunks_exact_mut(wo)) {
                let iy = (oy * s + ky).wrapping_sub(p);
                if iy >= h {
                    out.fill(0.0);
                    continue;
                }
                let src = &plane[iy * w..(iy + 1) * w];
                out[..ox_lo].fill(0.0);
                out[ox_hi..].fill(0.0);
                let x0 = ox_lo * s + kx - p;
                if s == 1 {
                    out[ox_lo..ox_hi].copy_from_slice(&src[x0..x0 + (ox_hi - ox_lo)]);
                } else {
                    for (o, x) in out[ox_lo..ox_hi].iter_mut().zip((x0..).step_by(s)) {
                        *o = src[x];
                    }
                }
            }
        }
    }

    fn record(
        &self,
        batch: usize,
        (ho, wo): (usize, usize),
        strategy: Strategy,
        spent: &Phases,
        total: Duration,
    ) {
        let (m, n, k) = (self.c_out, ho * wo, self.depth());
        // Phases ran on several threads at once: split the wall time in proportion to the
        // thread time each took.
        let [im2col, gemm, epilogue] = spent.nanos();
        let share = total.as_secs_f64() * 1e3 / (im2col + gemm + epilogue).max(1) as f64;
        let sample = LayerTime {
            name: self.name.clone(),
            kernel: self.k,
            stride: self.stride,
            c_in: self.c_in,
            c_out: self.c_out,
            out_h: ho,
            out_w: wo,
            batch,
            gflop: 2.0 * (m * n * k * batch) as f64 / 1e9,
            strategy: match strategy {
                Strategy::RowBands { .. } => "row bands",
                Strategy::ChannelSplit => "channel split",
            },
            ms: total.as_secs_f64() * 1e3,
            im2col_ms: im2col as f64 * share,
            gemm_ms: gemm as f64 * share,
            epilogue_ms: epilogue as f64 * share,
        };
        PROFILE.with(|log| {
            if let Some(log) = log.borrow_mut().as_mut() {
                log.push(sample);
            }
        });
    }
}

/// How one layer's work is split across threads (see [`CpuConv::strategy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// Bands of this many output rows, one task each.
    RowBands { rows: usize },
    /// One unfold, then the GEMM split by output channel.
    ChannelSplit,
}

/// Input and output spatial sizes of one image.
#[derive(Debug, Clone, Copy)]
struct Shape {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

/// Thread time spent in each phase, summed over tasks.
#[derive(Debug, Default)]
struct Phases {
    im2col: AtomicU64,
    gemm: AtomicU64,
    epilogue: AtomicU64,
}

impl Phases {
    fn add(&self, im2col: Duration, gemm: Duration, epilogue: Duration) {
        for (counter, d) in [
            (&self.im2col, im2col),
            (&self.gemm, gemm),
            (&self.epilogue, epilogue),
        ] {
            counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    fn nanos(&self) -> [u64; 3] {
        [&self.im2col, &self.gemm, &self.epilogue].map(|c| c.load(Ordering::Relaxed))
    }
}

/// Where a GEMM writes: rows `stride` apart from `ptr`, inside `len` values. A raw pointer
/// rather than a slice, because row-band blocks interleave: each band owns only its own
/// columns of the span between its first and last element.
struct OutputBlock<'a> {
    ptr: *mut f32,
    len: usize,
    stride: usize,
    _borrow: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> OutputBlock<'a> {
    /// All of `data`, as rows of `stride` values.
    fn whole(data: &'a mut [f32], stride: usize) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            stride,
            _borrow: std::marker::PhantomData,
        }
    }
}

/// An output buffer that row-band tasks write into at the same time, each into its own
/// columns. Only [`SharedOutput::columns`] and [`SharedOutput::row`] reach the memory, and
/// both are `unsafe`: the caller promises that no two live blocks overlap.
struct SharedOutput {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the pointer is only dereferenced through the unsafe accessors below, whose
// callers keep concurrent blocks disjoint.
unsafe impl Send for SharedOutput {}
// SAFETY: as above.
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    fn new(data: &mut [f32]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
        }
    }

    /// Columns `n0..n0 + n` of `rows` rows of `stride` values.
    ///
    /// # Safety
    /// No other live block may overlap these columns.
    unsafe fn columns(&self, n0: usize, n: usize, rows: usize, stride: usize) -> OutputBlock<'_> {
        assert!(
            n0 + n <= stride && rows * stride <= self.len,
            "block outside the output"
        );
        OutputBlock {
            // SAFETY: `n0 < len` by the assert.
            ptr: unsafe { self.ptr.add(n0) },
            len: self.len - n0,
            stride,
            _borrow: std::marker::PhantomData,
        }
    }

    /// `n` values from `offset`.
    ///
    /// # Safety
    /// No other live block may overlap them.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, offset: usize, n: usize) -> &mut [f32] {
        assert!(offset + n <= self.len, "row outside the output");
        // SAFETY: in bounds by the assert; the caller keeps concurrent writes disjoint.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), n) }
    }
}

/// `dst[i * stride + j] = sum_l lhs[i * k + l] * rhs[l * rhs_stride + j]` for `i < m`,
/// `j < n`, on the calling thread (the callers split the work across threads).
///
/// # Panics
/// When a slice is too short for the given shape and strides.
fn gemm_into(
    dst: OutputBlock<'_>,
    lhs: &[f32],
    rhs: &[f32],
    rhs_stride: usize,
    (m, n, k): (usize, usize, usize),
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        n <= dst.stride && n <= rhs_stride,
        "gemm: row longer than its stride"
    );
    assert!(lhs.len() >= m * k, "gemm: lhs too short");
    assert!(rhs.len() >= (k - 1) * rhs_stride + n, "gemm: rhs too short");
    assert!(dst.len >= (m - 1) * dst.stride + n, "gemm: dst too short");
    // SAFETY: the asserts above keep every element the GEMM reads or writes inside `lhs`,
    // `rhs` and the block (row-major, unit column stride, the given row strides); the block
    // is exclusively this call's (a `&mut` borrow, or disjoint columns, see
    // `SharedOutput::columns`), so it aliases neither input; `read_dst = false` means it is
    // only written.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            1,
            dst.stride as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            rhs_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Adds `bias` and applies the activation in place, vectorised for the CPU at hand.
fn bias_activation(values: &mut [f32], bias: f32, activation: Activation) {
    match activation {
        Activation::Identity => values.iter_mut().for_each(|v| *v += bias),
        Activation::Silu => pulp::Arch::new().dispatch(BiasSilu { values, bias }),
    }
}

/// The SiLU loop as a [`pulp::WithSimd`] operation, so that it is compiled once per
/// instruction set (AVX-512, AVX2, baseline) and the widest the CPU has runs.
struct BiasSilu<'a> {
    values: &'a mut [f32],
    bias: f32,
}

impl pulp::WithSimd for BiasSilu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for v in self.values {
            let x = *v + self.bias;
            *v = x / (1.0 + exp(-x));
        }
    }
}

/// `e^x` to within 1e-5 relative (1e-7 near 0) over the range where f32 is finite, branch-free so that loops
/// over it vectorise: `e^x = 2^n * 2^f` with `n = round(x / ln 2)`, `2^f` from a degree-6
/// polynomial on `[-0.5, 0.5]`, and `2^n` built in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Below -87.3 the result would be subnormal (SiLU's denominator is 1 there anyway);
    // above 88.3 it saturates at about 2e38, which still makes SiLU of a very negative
    // input 0, as it should be, without an infinity.
    let x = x.clamp(-87.3, 88.3);
    let t = x * std::f32::consts::LOG2_E;
    // Round to nearest with the 1.5 * 2^23 trick (a plain add, vectorisable).
    let shifter = 12_582_912.0f32;
    let shifted = t + shifter;
    let n = shifted - shifter;
    let f = t - n;
    // Cephes' exp2f coefficients (a minimax fit of 2^f on [-0.5, 0.5]). Plain multiply
    // and add rather than `mul_add`, which is a library call on CPUs without FMA.
    let p = 1.535_336_2e-4f32;
    let p = p * f + 1.339_887_4e-3;
    let p = p * f + 9.618_438e-3;
    let p = p * f + 5.550_332_5e-2;
    let p = p * f + 2.402_264_9e-1;
    let p = p * f + 6.931_472e-1;
    let p = p * f + 1.0;
    // The rounded value also sits in the low mantissa bits of `shifted` (offset by 2^22):
    // integer operations from here on, which vectorise where a float-to-int cast does not.
    let n_int = shifted.to_bits().wrapping_sub(0x4b40_0000);
    p * f32::from_bits(n_int.wrapping_add(127) << 23)
}

/// One convolution's time in a profiled forward pass.
#[derive(Debug, Clone, Serialize)]
pub struct LayerTime {
    /// Module name, as in the checkpoint (`model.2.cv1`).
    pub name: String,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Images in the batch.
    pub batch: usize,
    /// How the work was split across threads.
    pub strategy: &'static str,
    /// Floating-point operations of the GEMM (2 per multiply-add), in billions.
    pub gflop: f64,
    /// Wall time of the whole layer.
    pub ms: f64,
    /// Of which: unfolding the input.
    pub im2col_ms: f64,
    /// Of which: the GEMM.
    pub gemm_ms: f64,
    /// Of which: bias and activation.
    pub epilogue_ms: f64,
}

thread_local! {
    /// The layers recorded by a [`profile`] running on this thread, `None` outside one.
    static PROFILE: RefCell<Option<Vec<LayerTime>>> = const { RefCell::new(None) };
}

/// Runs `f` with layer timing on and returns what each CPU convolution it ran took, in
/// execution order. Only convolutions called from this thread are recorded (a layer's
/// parallel tasks are part of its call), so other threads' work never mixes in.
pub fn profile<R>(f: impl FnOnce() -> R) -> (R, Vec<LayerTime>) {
    let outer = PROFILE.with(|log| log.borrow_mut().replace(Vec::new()));
    let result = f();
    let layers = PROFILE.with(|log| std::mem::replace(&mut *log.borrow_mut(), outer));
    (result, layers.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Deterministic values in -1..1.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 20_001) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Compares against candle's own convolution + bias + SiLU for every strategy:
    /// 1x1 in place, 1x1 with stride, 3x3 with padding at strides 1 and 2, and a band
    /// split (an input larger than one im2col band), at batch 1 and 3.
    #[test]
    fn matches_candle_for_every_kernel_stride_and_padding() {
        let dev = Device::Cpu;
        for (c_in, c_out, k, s, p, h, w, batch) in [
            (8, 16, 1, 1, 0, 9, 7, 1),
            (8, 16, 1, 2, 0, 9, 7, 3),
            (5, 12, 3, 1, 1, 11, 13, 3),
            (5, 12, 3, 2, 1, 11, 13, 1),
            (3, 4, 5, 1, 2, 6, 6, 2),
            (16, 8, 3, 1, 1, 160, 140, 1),
        ] {
            let x = Tensor::from_vec(values(batch * c_in * h * w, 1), (batch, c_in, h, w), &dev)
                .unwrap();
            let kw = Tensor::from_vec(values(c_out * c_in * k * k, 2), (c_out, c_in, k, k), &dev)
                .unwrap();
            let b = Tensor::from_vec(values(c_out, 3), c_out, &dev).unwrap();
            for act in [Activation::Identity, Activation::Silu] {
                let conv = CpuConv::new("t", &kw, &b, s, p, act).unwrap();
                let got = conv.forward(&x).unwrap();
                let mut want = x
                    .conv2d(&kw, p, s, 1, 1)
                    .unwrap()
                    .broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap())
                    .unwrap();
                if act == Activation::Silu {
                    want = want.silu().unwrap();
                }
                assert_eq!(got.dims(), want.dims(), "shape for k{k} s{s} p{p}");
                let diff = max_abs_diff(&got, &want);
                assert!(diff < 1e-4, "k{k} s{s} p{p} {act:?}: max diff {diff}");
            }
        }
    }

    #[test]
    fn narrowed_channels_are_read_from_their_offset() {
        // C2f splits its first convolution's output along channels; at batch 1 the second
        // half is a contiguous view with an offset.
        let dev = Device::Cpu;
        let x = Tensor::from_vec(values(2 * 6 * 5 * 5, 4), (1, 12, 5, 5), &dev).unwrap();
        let half = x.narrow(1, 6, 6).unwrap();
        let kw = Tensor::from_vec(values(4 * 6 * 9, 5), (4, 6, 3, 3), &dev).unwrap();
        let b = Tensor::zeros(4, DType::F32, &dev).unwrap();
        let conv = CpuConv::new("t", &kw, &b, 1, 1, Activation::Identity).unwrap();
        let got = conv.forward(&half).unwrap();
        let want = half.contiguous().unwrap().conv2d(&kw, 1, 1, 1, 1).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }

    #[test]
    fn exp_is_accurate_over_the_whole_range() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        // Rounding `x / ln 2` in f32 costs up to ~4e-6 relative at the ends of the range;
        // SiLU's outputs are compared with the references at 1e-3.
        assert!(worst < 1e-5, "worst relative error {worst}");
        assert_eq!(exp(-200.0) * 0.0, 0.0);
        assert!(exp(200.0).is_finite());
    }

    #[test]
    fn wrong_channel_count_is_an_error_naming_the_layer() {
        let dev = Device::Cpu;
        let kw = Tensor::zeros((4, 3, 3, 3), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(4, DType::F32, &dev).unwrap();
        let conv = CpuConv::new("model.0.conv", &kw, &b, 2, 1, Activation::Silu).unwrap();
        let x = Tensor::zeros((1, 5, 8, 8), DType::F32, &dev).unwrap();
        let err = conv.forward(&x).unwrap_err().to_string();
        assert!(
            err.contains("model.0.conv: 5 input channels, expected 3"),
            "{err}"
        );
    }

    #[test]
    fn profile_records_each_layer_with_its_shape() {
        let dev = Device::Cpu;
        let kw = Tensor::zeros((4, 3, 3, 3), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(4, DType::F32, &dev).unwrap();
        let conv = CpuConv::new("stem", &kw, &b, 2, 1, Activation::Silu).unwrap();
        let x = Tensor::zeros((2, 3, 8, 8), DType::F32, &dev).unwrap();
        let (out, layers) = profile(|| conv.forward(&x).unwrap());
        assert_eq!(out.dims(), &[2, 4, 4, 4]);
        assert_eq!(layers.len(), 1);
        let l = &layers[0];
        assert_eq!(
            (l.name.as_str(), l.out_h, l.out_w, l.batch),
            ("stem", 4, 4, 2)
        );
        // 4 outputs x 16 pixels x 27 taps x 2 images x 2 flops
        assert!((l.gflop - 2.0 * 4.0 * 16.0 * 27.0 * 2.0 / 1e9).abs() < 1e-12);
    }
}
