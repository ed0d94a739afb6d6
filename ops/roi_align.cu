// RoIAlign (Mask R-CNN) forward and backward over one or several FPN levels in one launch.
// Compiled at run time by NVRTC (ops/_nvrtc.py); launched by ops/_cuda.py.
//
// Layout. A block takes one RoI and LANES consecutive channels; each warp takes one output bin at
// a time with its lanes on the channels. The sampling coordinates, bilinear weights and addresses
// depend only on (RoI, bin, point), so a warp computes them once for its 32 channels; on
// channels-last (N, H, W, C) maps each of its loads is one contiguous run of channels. Maps are
// addressed through strides, so other layouts work too (the host decides which to pass). The
// output (K, C, PH, PW) is written through shared memory so that stores run along the bins.
//
// Few channels (fewer than LANES: one, for the gt masks Mask R-CNN's mask targets pool from). The
// layout above would leave most lanes idle while each warp sums its bins' points one after
// another, so forward_few gives each thread one (channel, bin) of the output instead, as
// torchvision's kernel does: blocks along y take consecutive runs of LANES * WARPS outputs, and
// consecutive threads write consecutive bins. Forward only: the backward of so few channels is on
// no hot path (mask targets carry no gradient), and the layout above computes it for any count.
//
// Coordinates follow torchvision's roi_align kernels: aligned=1 shifts boxes by -0.5 pixel (pixel
// centres at +0.5); aligned=0 makes boxes at least 1x1; a sampling point outside [-1, size]
// contributes 0, and points are clamped to the map before interpolation.

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define MAX_LEVELS 8
#define LANES 32      // channels per block (one warp's lanes)
#define WARPS 8       // warps per block, each on its own bin
#define BIN_TILE 128  // output bins staged in shared memory per pass

// Must match ops/_cuda.py:_Maps field by field.
struct Maps {
  const void* data[MAX_LEVELS];  // maps; in the backward: gradient accumulation buffers
  long long stride_n[MAX_LEVELS];  // strides in elements: image, channel, row, column
  long long stride_c[MAX_LEVELS];
  long long stride_y[MAX_LEVELS];
  long long stride_x[MAX_LEVELS];
  int height[MAX_LEVELS];
  int width[MAX_LEVELS];
  double scale[MAX_LEVELS];      // map pixels per image pixel
  int levels;                    // number of maps
  int first_level;               // FPN level k of data[0] (scale 2^-k)
  int last_level;                // FPN level k of data[levels - 1]
  int canonical_level;
  double canonical_scale;
  int multilevel;                // 0: every RoI pools from data[0], no level mapping
};

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(float v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <typename T> __device__ __forceinline__ T from_acc(double v);
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }

__device__ __forceinline__ float sqrt_(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrt_(double v) { return sqrt(v); }
__device__ __forceinline__ float log2_(float v) { return log2f(v); }
__device__ __forceinline__ double log2_(double v) { return log2(v); }
__device__ __forceinline__ float floor_(float v) { return floorf(v); }
__device__ __forceinline__ double floor_(double v) { return floor(v); }
__device__ __forceinline__ float ceil_(float v) { return ceilf(v); }
__device__ __forceinline__ double ceil_(double v) { return ceil(v); }

// The map a RoI pools from: torchvision's LevelMapper (FPN eq. 1), -1 for a NaN level
// (degenerate box), which pools zeros.
template <typename A>
__device__ __forceinline__ int roi_level(const Maps& m, A x1, A y1, A x2, A y2) {
  if (!m.multilevel) return 0;
  const A size = sqrt_((x2 - x1) * (y2 - y1));
  A k = floor_((A)m.canonical_level + log2_(size / (A)m.canonical_scale) + (A)1e-6);
  if (k != k) return -1;
  if (k < (A)m.first_level) k = (A)m.first_level;
  if (k > (A)m.last_level) k = (A)m.last_level;
  return (int)k - m.first_level;
}

// Linear-interpolation taps of coordinate v on an axis of `size` pixels.
// Returns false when v lies outside [-1, size] or is NaN: the point contributes nothing.
template <typename A>
__device__ __forceinline__ bool taps(A v, int size, int& lo, int& hi, A& w_lo, A& w_hi) {
  if (!(v >= (A)-1.0 && v <= (A)size) || size <= 0) return false;
  if (v <= (A)0) v = (A)0;
  lo = (int)v;
  if (lo >= size - 1) {
    lo = hi = size - 1;
    v = (A)lo;
  } else {
    hi = lo + 1;
  }
  w_hi = v - (A)lo;
  w_lo = (A)1. - w_hi;
  return true;
}

// Everything a block needs about its RoI, in map pixels.
template <typename A>
struct Roi {
  int image, level, height, width, grid_h, grid_w;
  long long stride_c, stride_y, stride_x;
  A x1, y1, bin_w, bin_h, count;

  __device__ __forceinline__ Roi(const Maps& m, const A* rois, int pooled_h, int pooled_w,
                                 int sampling_ratio, int aligned) {
    const A* r = rois + 5 * (long long)blockIdx.x;
    image = (int)r[0];
    level = roi_level<A>(m, r[1], r[2], r[3], r[4]);
    const int l = level < 0 ? 0 : level;
    height = m.height[l];
    width = m.width[l];
    stride_c = m.stride_c[l];
    stride_y = m.stride_y[l];
    stride_x = m.stride_x[l];
    const A scale = (A)m.scale[l];
    const A offset = aligned ? (A)0.5 : (A)0.;
    x1 = r[1] * scale - offset;
    y1 = r[2] * scale - offset;
    A roi_w = r[3] * scale - offset - x1;
    A roi_h = r[4] * scale - offset - y1;
    if (!aligned) {  // legacy: at least one pixel
      roi_w = roi_w > (A)1. ? roi_w : (A)1.;
      roi_h = roi_h > (A)1. ? roi_h : (A)1.;
    }
    bin_h = roi_h / (A)pooled_h;
    bin_w = roi_w / (A)pooled_w;
    // adaptive: ceil(roi / bins); <= 0 for an aligned box with x2 < x1, which has no points
    grid_h = sampling_ratio > 0 ? sampling_ratio : (int)ceil_(roi_h / (A)pooled_h);
    grid_w = sampling_ratio > 0 ? sampling_ratio : (int)ceil_(roi_w / (A)pooled_w);
    const int n = grid_h * grid_w;
    count = (A)(n > 1 ? n : 1);
  }

  __device__ __forceinline__ A y(int ph, int iy) const {
    return y1 + ph * bin_h + (A)(iy + .5f) * bin_h / (A)grid_h;
  }
  __device__ __forceinline__ A x(int pw, int ix) const {
    return x1 + pw * bin_w + (A)(ix + .5f) * bin_w / (A)grid_w;
  }
};

// The mean of bin (ph, pw) of one channel, `data`, over the RoI's sampling grid.
template <typename T, typename A>
__device__ __forceinline__ A bin_mean(const Roi<A>& roi, const T* data, int ph, int pw) {
  A acc = 0;
  for (int iy = 0; iy < roi.grid_h; ++iy) {
    int ylo, yhi;
    A wylo, wyhi;
    if (!taps(roi.y(ph, iy), roi.height, ylo, yhi, wylo, wyhi)) continue;
    const T* row_lo = data + ylo * roi.stride_y;
    const T* row_hi = data + yhi * roi.stride_y;
    for (int ix = 0; ix < roi.grid_w; ++ix) {
      int xlo, xhi;
      A wxlo, wxhi;
      if (!taps(roi.x(pw, ix), roi.width, xlo, xhi, wxlo, wxhi)) continue;
      const long long a = xlo * roi.stride_x, b = xhi * roi.stride_x;
      acc += wylo * wxlo * to_acc(row_lo[a]) + wylo * wxhi * to_acc(row_lo[b]) +
             wyhi * wxlo * to_acc(row_hi[a]) + wyhi * wxhi * to_acc(row_hi[b]);
    }
  }
  return acc / roi.count;
}

template <typename T, typename A>
__device__ void forward(const Maps& m, const A* __restrict__ rois, int channels, int pooled_h,
                        int pooled_w, int sampling_ratio, int aligned, T* __restrict__ out) {
  __shared__ A tile[LANES][BIN_TILE + 1];  // +1: lanes write distinct banks
  const int lane = threadIdx.x, warp = threadIdx.y;
  const int c0 = blockIdx.y * LANES;
  const int c = c0 + lane;
  const long long k = blockIdx.x;
  const Roi<A> roi(m, rois, pooled_h, pooled_w, sampling_ratio, aligned);
  const bool live = roi.level >= 0 && c < channels;
  const int l = roi.level < 0 ? 0 : roi.level;
  // this lane's channel of the RoI's image
  const T* data = static_cast<const T*>(m.data[l]) + roi.image * m.stride_n[l] + c * roi.stride_c;
  const int bins = pooled_h * pooled_w;

  for (int b0 = 0; b0 < bins; b0 += BIN_TILE) {
    const int nb = min(BIN_TILE, bins - b0);
    for (int bi = warp; bi < nb; bi += WARPS) {
      const int ph = (b0 + bi) / pooled_w, pw = (b0 + bi) % pooled_w;
      tile[lane][bi] = live ? bin_mean(roi, data, ph, pw) : (A)0;
    }
    __syncthreads();
    // out[k, c, bin]: consecutive threads take consecutive bins of one channel
    for (int i = warp * LANES + lane; i < LANES * nb; i += LANES * WARPS) {
      const int cl = i / nb, bi = i - cl * nb;
      if (c0 + cl < channels) out[(k * channels + c0 + cl) * bins + b0 + bi] = from_acc<T>(tile[cl][bi]);
    }
    __syncthreads();
  }
}

// One (channel, bin) of the output per thread; grid (K, ceil(C * PH * PW / (LANES * WARPS))).
template <typename T, typename A>
__device__ void forward_few(const Maps& m, const A* __restrict__ rois, int channels, int pooled_h,
                            int pooled_w, int sampling_ratio, int aligned, T* __restrict__ out) {
  const int bins = pooled_h * pooled_w;
  const int items = channels * bins;  // of this RoI's output, (C, PH, PW) in order
  const int i = blockIdx.y * (LANES * WARPS) + threadIdx.y * LANES + threadIdx.x;
  if (i >= items) return;  // no barrier follows
  const Roi<A> roi(m, rois, pooled_h, pooled_w, sampling_ratio, aligned);
  const int c = i / bins, bin = i - c * bins;
  A mean = 0;
  if (roi.level >= 0) {
    const int l = roi.level;
    const T* data = static_cast<const T*>(m.data[l]) + roi.image * m.stride_n[l] + c * roi.stride_c;
    mean = bin_mean(roi, data, bin / pooled_w, bin % pooled_w);
  }
  out[(long long)blockIdx.x * items + i] = from_acc<T>(mean);
}

// m.data holds accumulation buffers of type A (zeroed by the caller), addressed by m's strides.
template <typename T, typename A>
__device__ void backward(const Maps& m, const A* __restrict__ rois, int channels, int pooled_h,
                         int pooled_w, int sampling_ratio, int aligned, const T* __restrict__ grad) {
  __shared__ A tile[LANES][BIN_TILE + 1];
  const int lane = threadIdx.x, warp = threadIdx.y;
  const int c0 = blockIdx.y * LANES;
  const int c = c0 + lane;
  const long long k = blockIdx.x;
  const Roi<A> roi(m, rois, pooled_h, pooled_w, sampling_ratio, aligned);
  if (roi.level < 0) return;  // uniform over the block
  const bool live = c < channels;
  const int l = roi.level;
  A* data = static_cast<A*>(const_cast<void*>(m.data[l])) + roi.image * m.stride_n[l] + c * roi.stride_c;
  const int bins = pooled_h * pooled_w;

  for (int b0 = 0; b0 < bins; b0 += BIN_TILE) {
    const int nb = min(BIN_TILE, bins - b0);
    // grad[k, c, bin] read along the bins, then used along the channels
    for (int i = warp * LANES + lane; i < LANES * nb; i += LANES * WARPS) {
      const int cl = i / nb, bi = i - cl * nb;
      tile[cl][bi] = c0 + cl < channels ? to_acc(grad[(k * channels + c0 + cl) * bins + b0 + bi]) : (A)0;
    }
    __syncthreads();
    for (int bi = warp; bi < nb && live; bi += WARPS) {
      const int ph = (b0 + bi) / pooled_w, pw = (b0 + bi) % pooled_w;
      const A g = tile[lane][bi] / roi.count;
      for (int iy = 0; iy < roi.grid_h; ++iy) {
        int ylo, yhi;
        A wylo, wyhi;
        if (!taps(roi.y(ph, iy), roi.height, ylo, yhi, wylo, wyhi)) continue;
        A* row_lo = data + ylo * roi.stride_y;
        A* row_hi = data + yhi * roi.stride_y;
        for (int ix = 0; ix < roi.grid_w; ++ix) {
          int xlo, xhi;
          A wxlo, wxhi;
          if (!taps(roi.x(pw, ix), roi.width, xlo, xhi, wxlo, wxhi)) continue;
          const long long a = xlo * roi.stride_x, b = xhi * roi.stride_x;
          // channels-last buffers: a warp's 32 lanes hit 32 consecutive addresses, so the
          // reductions coalesce in L2
          atomicAdd(row_lo + a, wylo * wxlo * g);
          atomicAdd(row_lo + b, wylo * wxhi * g);
          atomicAdd(row_hi + a, wyhi * wxlo * g);
          atomicAdd(row_hi + b, wyhi * wxhi * g);
        }
      }
    }
    __syncthreads();
  }
}

#define ROI_ALIGN_KERNELS(suffix, T, A)                                                          \
  extern "C" __global__ void __launch_bounds__(LANES* WARPS) roi_align_forward_##suffix(          \
      const Maps maps, const A* rois, int channels, int pooled_h, int pooled_w,                  \
      int sampling_ratio, int aligned, T* out) {                                                 \
    forward<T, A>(maps, rois, channels, pooled_h, pooled_w, sampling_ratio, aligned, out);       \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(LANES* WARPS) roi_align_forward_few_##suffix(      \
      const Maps maps, const A* rois, int channels, int pooled_h, int pooled_w,                  \
      int sampling_ratio, int aligned, T* out) {                                                 \
    forward_few<T, A>(maps, rois, channels, pooled_h, pooled_w, sampling_ratio, aligned, out);   \
  }                                                                                              \
  extern "C" __global__ void __launch_bounds__(LANES* WARPS) roi_align_backward_##suffix(         \
      const Maps maps, const A* rois, int channels, int pooled_h, int pooled_w,                  \
      int sampling_ratio, int aligned, const T* grad) {                                          \
    backward<T, A>(maps, rois, channels, pooled_h, pooled_w, sampling_ratio, aligned, grad);     \
  }

ROI_ALIGN_KERNELS(f32, float, float)
ROI_ALIGN_KERNELS(f64, double, double)
ROI_ALIGN_KERNELS(f16, __half, float)
ROI_ALIGN_KERNELS(bf16, __nv_bfloat16, float)
