// DMTL's training step on CPU, compiled (models/dmtl_native.py builds and loads it on first use).
//
// The same forward algebra, losses and hand-derived gradients as the eager fused step
// (models/dmtl_fused.py) and torch.optim.Adam's update, checked against autograd by
// tests/test_dmtl_native.py. What it adds: every element-wise part runs in one loop per layer,
// fused with its neighbours while the rows are still in cache, instead of one ATen call per
// operation; the input projections (19-23 features, where MKL runs far below peak) are
// register-blocked loops; the other products go through ATen (MKL); and whole epochs and
// validation passes run here, so Python is not involved per step. Why: at DMTL's widths the eager
// step spends more time in per-op dispatch and passes over memory than in its products
// (docs/performance.md, "DMTL training speed").
//
// Layout: every activation is row-major (rows = batch rows). The Step object owns its workspaces,
// sized for the largest batch, so a step allocates nothing; data rows are packed into one cache line
// each (Step.pack) so a shuffled batch costs one memory access per row.

#include <ATen/CPUGeneratorImpl.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

namespace {

enum Activation : int64_t { RELU = 0, GELU = 1, TANH = 2, SIGMOID = 3, ELU = 4, LEAKY_RELU = 5 };
enum Attention : int64_t { NONE = 0, SOFTMAX = 1, UNIFORM = 2 };

// One row of the data packed into one 64-byte cache line, so a shuffled batch costs one random
// memory access per row (instead of one per column): user, item, user feature row, item feature
// row, group, rating (as double bits), 2 unused.
constexpr int64_t RECORD = 8;
enum Field : int64_t { USER = 0, ITEM = 1, USER_FEATURE = 2, ITEM_FEATURE = 3, GROUP = 4, RATING = 5 };

// exp for the two softmaxes. float: a Cephes-style polynomial (max error ~2 ulp) written so the
// compiler vectorises it (std::exp on float is a scalar call); double: std::exp (the tests' dtype).
// NaN passes through (every comparison with NaN is false), so a diverged run still reports NaN.
inline float softmax_exp(float x) {
  x = x < -87.3f ? -87.3f : x;  // inputs are x - rowmax <= 0; 2^n stays a normal float
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double softmax_exp(double x) { return std::exp(x); }

// The activations as torch defines them (nn defaults: GELU exact, LeakyReLU slope 0.01, ELU alpha 1).
template <typename T>
void activate(int64_t kind, const T* in, T* out, int64_t n) {
  switch (kind) {
    case RELU:
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) out[j] = in[j] > T(0) ? in[j] : T(0);
      break;
    case GELU:
      for (int64_t j = 0; j < n; ++j) out[j] = T(0.5) * in[j] * (T(1) + std::erf(in[j] * T(M_SQRT1_2)));
      break;
    case TANH:
      for (int64_t j = 0; j < n; ++j) out[j] = std::tanh(in[j]);
      break;
    case SIGMOID:
      for (int64_t j = 0; j < n; ++j) out[j] = T(1) / (T(1) + std::exp(-in[j]));
      break;
    case ELU:
      for (int64_t j = 0; j < n; ++j) out[j] = in[j] > T(0) ? in[j] : std::expm1(in[j]);
      break;
    case LEAKY_RELU:
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) out[j] = in[j] > T(0) ? in[j] : T(0.01) * in[j];
      break;
    default:
      TORCH_CHECK(false, "dmtl_native: unknown activation code ", kind);
  }
}

// grad <- grad * act'(pre), in place, from the pre-activation and/or the output (as aten's
// *_backward kernels do: relu and elu from the output, gelu and leaky_relu from the input).
template <typename T>
void activate_backward(int64_t kind, T* grad, const T* pre, const T* out, int64_t n) {
  switch (kind) {
    case RELU:
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) grad[j] = out[j] > T(0) ? grad[j] : T(0);
      break;
    case GELU:
      for (int64_t j = 0; j < n; ++j) {
        const T x = pre[j];
        const T cdf = T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
        const T pdf = std::exp(T(-0.5) * x * x) * T(0.5 * M_2_SQRTPI * M_SQRT1_2);
        grad[j] *= cdf + x * pdf;
      }
      break;
    case TANH:
      for (int64_t j = 0; j < n; ++j) grad[j] *= T(1) - out[j] * out[j];
      break;
    case SIGMOID:
      for (int64_t j = 0; j < n; ++j) grad[j] *= (T(1) - out[j]) * out[j];
      break;
    case ELU:
      for (int64_t j = 0; j < n; ++j) grad[j] = out[j] <= T(0) ? grad[j] * (out[j] + T(1)) : grad[j];
      break;
    case LEAKY_RELU:
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) grad[j] = pre[j] > T(0) ? grad[j] : grad[j] * T(0.01);
      break;
    default:
      TORCH_CHECK(false, "dmtl_native: unknown activation code ", kind);
  }
}

// x[0..n) <- exp(x - max(x)) in place; sum <- their sum; returns the log-partition log(sum) + max.
template <typename T>
T exp_row(T* x, int64_t n, T& sum) {
  T top = x[0];
#pragma omp simd reduction(max : top)
  for (int64_t j = 0; j < n; ++j) top = x[j] > top ? x[j] : top;
  sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    x[j] = softmax_exp(x[j] - top);
    sum += x[j];
  }
  return std::log(sum) + top;
}

// Row-wise softmax of x[0..n) in place.
template <typename T>
void softmax_row(T* x, int64_t n) {
  T sum;
  exp_row(x, n, sum);
  const T inverse = T(1) / sum;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) x[j] *= inverse;
}

// out (cols x rows) = in (rows x cols) transposed
template <typename T>
void transpose(const T* in, T* out, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[j * rows + i] = in[i * cols + j];
}

// The input projections read 19-23 side features into 32-wide outputs: at those widths MKL runs far
// below its peak, so they are loops over register-sized blocks of 16 outputs (GCC vector types, so
// the compiler cannot fall back to scalar code).
constexpr int64_t LANES = 16;
// (an alias template cannot carry vector_size: GCC drops the attribute on dependent types)
typedef float FloatLanes __attribute__((vector_size(LANES * sizeof(float))));
typedef double DoubleLanes __attribute__((vector_size(LANES * sizeof(double))));
template <typename T>
struct LanesOf;
template <>
struct LanesOf<float> {
  using type = FloatLanes;
};
template <>
struct LanesOf<double> {
  using type = DoubleLanes;
};
template <typename T>
using Lanes = typename LanesOf<T>::type;
static_assert(sizeof(Lanes<float>) == LANES * sizeof(float), "vector type lost its width");

template <typename T>
inline Lanes<T> load(const T* p) {
  Lanes<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void store(T* p, const Lanes<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// p[j * stride] += v[j]: adds a block of 16 to a column of a row-major matrix
template <typename T>
inline void add_column(T* p, int64_t stride, const Lanes<T>& v) {
  T lanes[LANES];
  std::memcpy(lanes, &v, sizeof(lanes));
  for (int64_t j = 0; j < LANES; ++j) p[j * stride] += lanes[j];
}

// out[0..dim) = bias + embedding + x W^T for one row, with w_t = W^T (features x dim). Two blocks of
// 16 outputs at a time, even and odd features apart: four independent FMA chains instead of one.
template <typename T>
void project_row(T* __restrict out, const T* __restrict bias, const T* __restrict embedding, const T* __restrict x,
                 const T* __restrict w_t, int64_t features, int64_t dim) {
  int64_t o0 = 0;
  for (; o0 + 2 * LANES <= dim; o0 += 2 * LANES) {
    Lanes<T> a0 = load(bias + o0) + load(embedding + o0), a1 = load(bias + o0 + LANES) + load(embedding + o0 + LANES);
    Lanes<T> b0 = {}, b1 = {};
    int64_t f = 0;
    for (; f + 2 <= features; f += 2) {
      const T* w = w_t + f * dim + o0;
      a0 += x[f] * load(w);
      a1 += x[f] * load(w + LANES);
      b0 += x[f + 1] * load(w + dim);
      b1 += x[f + 1] * load(w + dim + LANES);
    }
    if (f < features) {
      const T* w = w_t + f * dim + o0;
      a0 += x[f] * load(w);
      a1 += x[f] * load(w + LANES);
    }
    store(out + o0, a0 + b0);
    store(out + o0 + LANES, a1 + b1);
  }
  for (; o0 + LANES <= dim; o0 += LANES) {
    Lanes<T> acc = load(bias + o0) + load(embedding + o0);
    for (int64_t f = 0; f < features; ++f) acc += x[f] * load(w_t + f * dim + o0);
    store(out + o0, acc);
  }
  for (int64_t o = o0; o < dim; ++o) {  // dims that are not a multiple of 16
    T acc = bias[o] + embedding[o];
    for (int64_t f = 0; f < features; ++f) acc += x[f] * w_t[f * dim + o];
    out[o] = acc;
  }
}

// dw (dim x features) += G^T X: the weight gradient of a projection; G is rows x dim with row stride ld,
// X's row r is table[feature[r * RECORD]] (feature points into the batch's records). Four features
// per pass over the rows: four independent accumulators hide the FMA latency.
template <typename T>
void projection_weight_grad(T* __restrict dw, const T* __restrict G, int64_t ld, const T* __restrict table,
                            const int64_t* feature, int64_t rows, int64_t features, int64_t dim) {
  auto x_row = [&](int64_t r) { return table + feature[r * RECORD] * features; };
  int64_t o0 = 0;
  for (; o0 + LANES <= dim; o0 += LANES) {
    int64_t f = 0;
    for (; f + 4 <= features; f += 4) {
      Lanes<T> a0 = {}, a1 = {}, a2 = {}, a3 = {};
      for (int64_t r = 0; r < rows; ++r) {
        const Lanes<T> g = load(G + r * ld + o0);
        const T* x = x_row(r) + f;
        a0 += x[0] * g;
        a1 += x[1] * g;
        a2 += x[2] * g;
        a3 += x[3] * g;
      }
      add_column(dw + o0 * features + f, features, a0);
      add_column(dw + o0 * features + f + 1, features, a1);
      add_column(dw + o0 * features + f + 2, features, a2);
      add_column(dw + o0 * features + f + 3, features, a3);
    }
    for (; f < features; ++f) {
      Lanes<T> acc = {};
      for (int64_t r = 0; r < rows; ++r) acc += x_row(r)[f] * load(G + r * ld + o0);
      add_column(dw + o0 * features + f, features, acc);
    }
  }
  for (int64_t o = o0; o < dim; ++o)  // dims that are not a multiple of 16
    for (int64_t f = 0; f < features; ++f) {
      T acc = 0;
      for (int64_t r = 0; r < rows; ++r) acc += G[r * ld + o] * x_row(r)[f];
      dw[o * features + f] += acc;
    }
}

template <typename T>
void add_row(T* __restrict acc, const T* __restrict row, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) acc[j] += row[j];
}

struct Dims {
  int64_t b, du, di, dh, ds, k;
};

// The rows of one batch (contiguous records) and the side-feature tables their feature rows index
// (per-user and per-item tables: small, so they stay in cache).
template <typename T>
struct Rows {
  const int64_t* record;
  const T *user_table, *item_table;
  int64_t count, fu, fi;
  int64_t field(int64_t r, Field f) const { return record[r * RECORD + f]; }
  T rating(int64_t r) const {
    double value;
    std::memcpy(&value, record + r * RECORD + RATING, sizeof(value));
    return T(value);
  }
  const T* xu(int64_t r) const { return user_table + field(r, USER_FEATURE) * fu; }
  const T* xi(int64_t r) const { return item_table + field(r, ITEM_FEATURE) * fi; }
};

// Forward and losses of one batch (written to losses[0..2)), then, if backward, the gradients added into g.
template <typename T>
void step_impl(const std::vector<at::Tensor>& p, const std::vector<at::Tensor>& g, const Rows<T>& data,
               const int16_t* draws, const std::vector<at::Tensor>& ws, T* losses, double lambda, double low,
               double span, double keep_scale, double drop_threshold, int64_t activation, int64_t attention,
               bool backward) {
  // parameters and their gradients, in DMTLNetwork's order
  const at::Tensor &Eu = p[0], &Ei = p[1], &Wu = p[2], &bu = p[3], &Wi = p[4], &bi = p[5], &Wa = p[6], &ba = p[7],
                   &Ws = p[8], &bs = p[9], &Wp = p[10], &bp = p[11], &wr = p[12], &br = p[13];
  Dims d{data.count, Eu.size(1), Ei.size(1), Eu.size(1) + Ei.size(1), Ws.size(0), Wp.size(0)};
  const bool softmax_attention = attention == SOFTMAX;
  auto rows = [&](const at::Tensor& t, int64_t width) { return t.narrow(0, 0, d.b * width).view({d.b, width}); };
  at::Tensor pre = rows(ws[0], d.dh), h = rows(ws[1], d.dh), alpha = rows(ws[2], d.di), s = rows(ws[3], d.dh),
             z_pre = rows(ws[4], d.ds), z_act = rows(ws[5], d.ds), z = rows(ws[6], d.ds), logits = rows(ws[7], d.k),
             dz = rows(ws[8], d.ds), dsh = rows(ws[9], d.dh), datt = rows(ws[10], d.di);
  const T scale = T(1) / T(d.b);  // both losses are batch means

  // ---- forward ----
  // The input projections read 19-23 side features: at that width a loop over the rows (fused with
  // the embedding look-up and the activation) is several times faster than a GEMM call.
  const int64_t fu = data.fu, fi = data.fi;
  T* wu_t = ws[11].data_ptr<T>();  // W^T (features x dim), so the loop runs along the output dims
  T* wi_t = ws[12].data_ptr<T>();
  transpose(Wu.data_ptr<T>(), wu_t, d.du, fu);
  transpose(Wi.data_ptr<T>(), wi_t, d.di, fi);
  {
    T* P = pre.data_ptr<T>();
    for (int64_t r = 0; r < d.b; ++r) {
      T* row = P + r * d.dh;
      project_row(row, bu.data_ptr<T>(), Eu.data_ptr<T>() + data.field(r, USER) * d.du, data.xu(r), wu_t, fu, d.du);
      project_row(row + d.du, bi.data_ptr<T>(), Ei.data_ptr<T>() + data.field(r, ITEM) * d.di, data.xi(r), wi_t, fi,
                  d.di);
    }
    activate(activation, P, h.data_ptr<T>(), d.b * d.dh);
  }
  at::Tensor shared_in = h;  // [hu ; α ⊙ hi]
  if (attention != NONE) {
    if (softmax_attention) at::addmm_out(alpha, ba, h, Wa.t());
    T* A = alpha.data_ptr<T>();
    const T* H = h.data_ptr<T>();
    T* S = s.data_ptr<T>();
    const T uniform = T(1) / T(d.di);
    for (int64_t r = 0; r < d.b; ++r) {
      const T* hr = H + r * d.dh;
      T* sr = S + r * d.dh;
      std::memcpy(sr, hr, d.du * sizeof(T));
      if (softmax_attention) {
        T* ar = A + r * d.di;
        softmax_row(ar, d.di);
#pragma omp simd
        for (int64_t j = 0; j < d.di; ++j) sr[d.du + j] = ar[j] * hr[d.du + j];
      } else {
#pragma omp simd
        for (int64_t j = 0; j < d.di; ++j) sr[d.du + j] = uniform * hr[d.du + j];
      }
    }
    shared_in = s;
  }
  at::addmm_out(z_pre, bs, shared_in, Ws.t());
  const bool dropout = draws != nullptr;
  {
    const int64_t n = d.b * d.ds;
    activate(activation, z_pre.data_ptr<T>(), z_act.data_ptr<T>(), n);
    const T* Za = z_act.data_ptr<T>();
    T* Z = z.data_ptr<T>();
    if (dropout) {
      const int16_t* draw = draws;
      const T keep = T(keep_scale);
      const float threshold = static_cast<float>(drop_threshold);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) Z[j] = static_cast<float>(draw[j]) > threshold ? Za[j] * keep : T(0);
    } else {
      std::memcpy(Z, Za, n * sizeof(T));
    }
  }
  at::addmm_out(logits, bp, z, Wp.t());

  // ---- both heads' losses and the gradient at their inputs, one row at a time ----
  T* dzr = dz.data_ptr<T>();
  double sum_sq = 0, sum_ce = 0;
  {
    T* L = logits.data_ptr<T>();
    const T* Z = z.data_ptr<T>();
    const T* w = wr.data_ptr<T>();
    const T bias = br.data_ptr<T>()[0];
    T* gw = g[12].data_ptr<T>();
    T* gbias_r = g[13].data_ptr<T>();
    T* gbp = g[11].data_ptr<T>();
    const T lam = T(lambda) * scale;
    T d_rating_bias = 0;
    for (int64_t r = 0; r < d.b; ++r) {
      const T* zr = Z + r * d.ds;
      T t = bias;
#pragma omp simd reduction(+ : t)
      for (int64_t j = 0; j < d.ds; ++j) t += zr[j] * w[j];
      const T sig = T(1) / (T(1) + std::exp(-t));
      const T error = (T(low) + T(span) * sig) - data.rating(r);
      sum_sq += double(error) * double(error);
      T* lr = L + r * d.k;
      const int64_t label = data.field(r, GROUP);
      const T picked = lr[label];
      T partition;  // sum of exp(logit - max); the row becomes those exps
      sum_ce += double(exp_row(lr, d.k, partition) - picked);  // -log p_label, exact (no clamp needed)
      if (!backward) continue;
      const T dr = error * T(2.0 * span) * scale * sig * (T(1) - sig);  // dL / d rating logit
      d_rating_bias += dr;
      T* dzrow = dzr + r * d.ds;
#pragma omp simd
      for (int64_t j = 0; j < d.ds; ++j) {
        gw[j] += dr * zr[j];
        dzrow[j] = dr * w[j];  // the profiling head adds its part after the product below
      }
      if (lambda > 0) {  // dL/dlogits = λ/b (softmax - onehot), and its column sums (the bias gradient)
        const T c = lam / partition;
#pragma omp simd
        for (int64_t j = 0; j < d.k; ++j) {
          lr[j] *= c;
          gbp[j] += lr[j];
        }
        lr[label] -= lam;
        gbp[label] -= lam;
      }
    }
    if (backward) gbias_r[0] += d_rating_bias;
  }
  losses[0] = T(sum_sq / d.b);
  losses[1] = T(sum_ce / d.b);
  if (!backward) return;

  // ---- backward through the shared layer ----
  if (lambda > 0) {
    g[10].addmm_(logits.t(), z);  // dL/dWp
    dz.addmm_(logits, Wp);        // + dL/dz from the profiling head
  }
  {
    const int64_t n = d.b * d.ds;
    T* D = dz.data_ptr<T>();
    if (dropout) {
      const int16_t* draw = draws;
      const T keep = T(keep_scale);
      const float threshold = static_cast<float>(drop_threshold);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) D[j] = static_cast<float>(draw[j]) > threshold ? D[j] * keep : T(0);
    }
    activate_backward(activation, D, z_pre.data_ptr<T>(), z_act.data_ptr<T>(), n);
    T* gbs = g[9].data_ptr<T>();
    for (int64_t r = 0; r < d.b; ++r) add_row(gbs, D + r * d.ds, d.ds);
  }
  g[8].addmm_(dz.t(), shared_in);  // dL/dWs
  at::mm_out(dsh, dz, Ws);          // dL/d[hu ; α ⊙ hi]

  // ---- attention ----
  if (attention != NONE) {
    T* DS = dsh.data_ptr<T>();
    const T* A = alpha.data_ptr<T>();
    const T* H = h.data_ptr<T>();
    T* DA = datt.data_ptr<T>();
    T* gba = softmax_attention ? g[7].data_ptr<T>() : nullptr;
    const T uniform = T(1) / T(d.di);
    for (int64_t r = 0; r < d.b; ++r) {
      T* dsr = DS + r * d.dh + d.du;  // becomes dL/dhi (the direct path through α ⊙ hi)
      const T* hr = H + r * d.dh + d.du;
      if (softmax_attention) {
        const T* ar = A + r * d.di;
        T* dar = DA + r * d.di;
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < d.di; ++j) dot += dsr[j] * hr[j] * ar[j];
#pragma omp simd
        for (int64_t j = 0; j < d.di; ++j) {
          dar[j] = ar[j] * (dsr[j] * hr[j] - dot);  // softmax backward
          dsr[j] *= ar[j];
        }
        add_row(gba, dar, d.di);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < d.di; ++j) dsr[j] *= uniform;
      }
    }
    if (softmax_attention) {
      g[6].addmm_(datt.t(), h);  // dL/dWa
      dsh.addmm_(datt, Wa);      // + the path through α
    }
  }

  // ---- the two input branches: activation backward, embeddings, projections (loops, as forward) ----
  {
    T* DH = dsh.data_ptr<T>();
    activate_backward(activation, DH, pre.data_ptr<T>(), h.data_ptr<T>(), d.b * d.dh);
    T* geu = g[0].data_ptr<T>();
    T* gei = g[1].data_ptr<T>();
    T* gbu = g[3].data_ptr<T>();
    T* gbi = g[5].data_ptr<T>();
    for (int64_t r = 0; r < d.b; ++r) {
      const T* row = DH + r * d.dh;
      const int64_t user = data.field(r, USER), item = data.field(r, ITEM);
      add_row(gbu, row, d.du);
      add_row(gbi, row + d.du, d.di);
      // id 0 is the unknown-id padding row: it stays zero, as in nn.Embedding(padding_idx=0)
      if (user != 0) add_row(geu + user * d.du, row, d.du);
      if (item != 0) add_row(gei + item * d.di, row + d.du, d.di);
    }
    projection_weight_grad(g[2].data_ptr<T>(), DH, d.dh, data.user_table, data.record + USER_FEATURE, d.b, fu, d.du);
    projection_weight_grad(g[4].data_ptr<T>(), DH + d.du, d.dh, data.item_table, data.record + ITEM_FEATURE, d.b, fi,
                           d.di);
  }
}

// Adam exactly as torch.optim.Adam (amsgrad and maximize off) writes it, over the one flat buffer.
template <typename T>
void adam_impl(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, int64_t step, double lr, double beta1,
               double beta2, double eps, double weight_decay) {
  const T b1 = T(beta1), b2 = T(beta2), wd = T(weight_decay), w1 = T(1 - beta1), w2 = T(1 - beta2);
  const T step_size = T(lr / (1 - std::pow(beta1, double(step))));
  const T correction2_sqrt = T(std::sqrt(1 - std::pow(beta2, double(step))));
  const T epsilon = T(eps);
  (void)b1;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const T g = grad[j] + wd * param[j];
    const T m = exp_avg[j] + w1 * (g - exp_avg[j]);  // lerp(m, g, 1 - beta1), as torch computes it
    const T v = exp_avg_sq[j] * b2 + w2 * g * g;
    exp_avg[j] = m;
    exp_avg_sq[j] = v;
    param[j] -= step_size * (m / (std::sqrt(v) / correction2_sqrt + epsilon));
  }
}

// The whole training step for one model, holding its parameters, gradients, Adam state and
// workspaces, so a call passes only the data.
class Step {
 public:
  Step(std::vector<at::Tensor> params, std::vector<at::Tensor> grads, at::Tensor flat, at::Tensor flat_grad,
       int64_t max_rows, double lambda, double low, double span, bool dropout, double keep_scale, double drop_threshold,
       int64_t activation, int64_t attention, double lr, double weight_decay, double beta1, double beta2, double eps)
      : p_(std::move(params)), g_(std::move(grads)), flat_(flat), flat_grad_(flat_grad),
        exp_avg_(at::zeros_like(flat)), exp_avg_sq_(at::zeros_like(flat)), lambda_(lambda), low_(low), span_(span),
        dropout_(dropout), keep_scale_(keep_scale), drop_threshold_(drop_threshold), activation_(activation),
        attention_(attention), lr_(lr), weight_decay_(weight_decay), beta1_(beta1), beta2_(beta2), eps_(eps),
        max_rows_(max_rows) {
    TORCH_CHECK(p_.size() == 14 && g_.size() == 14, "dmtl_native.Step: expected 14 parameters and 14 gradients");
    TORCH_CHECK(flat.device().is_cpu() && flat.is_contiguous() && flat_grad.is_contiguous(),
                "dmtl_native.Step: parameters must live in one contiguous CPU buffer");
    TORCH_CHECK(flat.scalar_type() == at::kFloat || flat.scalar_type() == at::kDouble,
                "dmtl_native.Step: float32 or float64 parameters only");
    TORCH_CHECK(max_rows >= 1, "dmtl_native.Step: max_rows must be >= 1");
    const int64_t du = p_[0].size(1), di = p_[1].size(1), dh = du + di, ds = p_[8].size(0), k = p_[10].size(0);
    for (int64_t width : {dh, dh, di, dh, ds, ds, ds, k, ds, dh, di})
      ws_.push_back(at::empty({max_rows * width}, flat.options()));
    ws_.push_back(at::empty({p_[2].numel()}, flat.options()));  // the projections' W^T
    ws_.push_back(at::empty({p_[4].numel()}, flat.options()));
    batch_records_ = at::empty({max_rows, RECORD}, flat.options().dtype(at::kLong));
    draws_ = at::empty({(max_rows * ds + 3) / 4 * 4}, flat.options().dtype(at::kShort));
  }

  // The dropout draws the next step would use for `rows` rows (rows x shared width int16; a unit is
  // kept iff its draw > the threshold). Advances the generator like a step does: for tests.
  at::Tensor dropout_draws(int64_t rows, at::Generator generator) {
    const int64_t ds = p_[8].size(0);
    at::Tensor out = at::empty({(rows * ds + 3) / 4 * 4}, flat_.options().dtype(at::kShort));
    fill_draws(generator, out.data_ptr<int16_t>(), rows * ds);
    return out.narrow(0, 0, rows * ds).view({rows, ds});
  }

  // The rows of data (user, item, user_feature, item_feature, rating, group: one entry per row) and
  // the two side-feature tables the *_feature columns index -> (rows x RECORD) int64 records, after
  // checking every index against what it indexes (out of range would read past a table).
  at::Tensor pack(const std::vector<at::Tensor>& data, const at::Tensor& user_table, const at::Tensor& item_table) {
    TORCH_CHECK(data.size() == 6, "dmtl_native.Step.pack: expected user, item, user_feature, item_feature, rating, group");
    check_tables(user_table, item_table);
    const int64_t n = data[0].size(0);
    for (const auto& t : data)
      TORCH_CHECK(t.dim() == 1 && t.size(0) == n && t.device().is_cpu(),
                  "dmtl_native.Step.pack: the per-row tensors must be 1-d, of one length, on CPU");
    const std::pair<int, int64_t> ranges[] = {{0, p_[0].size(0)},       {1, p_[1].size(0)}, {2, user_table.size(0)},
                                              {3, item_table.size(0)}, {5, p_[10].size(0)}};
    for (const auto& [i, size] : ranges) {
      TORCH_CHECK(data[i].scalar_type() == at::kLong, "dmtl_native.Step.pack: ids and feature rows must be int64");
      if (n == 0) continue;
      const auto [low, high] = at::aminmax(data[i]);
      TORCH_CHECK(low.item<int64_t>() >= 0 && high.item<int64_t>() < size, "dmtl_native.Step.pack: indices in tensor ",
                  i, " outside [0, ", size, ")");
    }
    at::Tensor records = at::zeros({n, RECORD}, data[0].options().dtype(at::kLong));
    const Field fields[] = {USER, ITEM, USER_FEATURE, ITEM_FEATURE};
    for (int i = 0; i < 4; ++i) records.select(1, fields[i]).copy_(data[i]);
    records.select(1, GROUP).copy_(data[5]);
    records.select(1, RATING).copy_(data[4].to(at::kDouble).view(at::kLong));
    return records;
  }

  // One epoch: batches of `batch` records in the order of `order` (a permutation of the records'
  // rows), each a forward, backward and Adam update -> mean (rating loss, profiling loss).
  at::Tensor train_epoch(const at::Tensor& records, const at::Tensor& user_table, const at::Tensor& item_table,
                         const at::Tensor& order, int64_t batch, at::Generator generator) {
    check_records(records);
    check_tables(user_table, item_table);
    const int64_t n = records.size(0);
    TORCH_CHECK(batch >= 1 && batch <= max_rows_, "dmtl_native.Step: batch ", batch, " outside [1, ", max_rows_, "]");
    TORCH_CHECK(order.scalar_type() == at::kLong && order.dim() == 1 && order.size(0) == n && order.is_contiguous(),
                "dmtl_native.Step: order must be a contiguous int64 permutation of the ", n, " rows");
    if (n > 0) {
      const auto [low, high] = at::aminmax(order);
      TORCH_CHECK(low.item<int64_t>() >= 0 && high.item<int64_t>() < n, "dmtl_native.Step: order indexes past the data");
    }
    at::NoGradGuard no_grad;
    const int64_t* source = records.data_ptr<int64_t>();
    const int64_t* index = order.data_ptr<int64_t>();
    int64_t* gathered = batch_records_.data_ptr<int64_t>();
    double sums[2] = {0, 0};
    for (int64_t start = 0; start < n; start += batch) {
      const int64_t count = std::min(batch, n - start);
      // one tight gather loop: the rows' cache misses overlap instead of stalling the step's loops
      for (int64_t r = 0; r < count; ++r)
        std::memcpy(gathered + r * RECORD, source + index[start + r] * RECORD, RECORD * sizeof(int64_t));
      AT_DISPATCH_FLOATING_TYPES(flat_.scalar_type(), "dmtl_native_train", [&] {
        scalar_t losses[2];
        update<scalar_t>(rows<scalar_t>(gathered, user_table, item_table, count), generator, losses);
        sums[0] += double(losses[0]) * count;
        sums[1] += double(losses[1]) * count;
      });
    }
    return losses_tensor(n ? sums[0] / n : 0.0, n ? sums[1] / n : 0.0);
  }

  // One step on the records of one batch (1 to max_rows rows, in order) -> its (rating loss, profiling loss).
  at::Tensor train(const at::Tensor& records, const at::Tensor& user_table, const at::Tensor& item_table,
                   at::Generator generator) {
    check_records(records);
    check_tables(user_table, item_table);
    TORCH_CHECK(records.size(0) >= 1 && records.size(0) <= max_rows_, "dmtl_native.Step: a batch of ",
                records.size(0), " rows; the workspace holds 1 to ", max_rows_);
    at::NoGradGuard no_grad;
    double result[2];
    AT_DISPATCH_FLOATING_TYPES(flat_.scalar_type(), "dmtl_native_train", [&] {
      scalar_t losses[2];
      update<scalar_t>(rows<scalar_t>(records.data_ptr<int64_t>(), user_table, item_table, records.size(0)), generator,
                       losses);
      result[0] = losses[0];
      result[1] = losses[1];
    });
    return losses_tensor(result[0], result[1]);
  }

  // Forward and losses only (evaluation: no dropout, no update), in chunks of the workspace size
  // -> mean (rating loss, profiling loss) over all records.
  at::Tensor evaluate(const at::Tensor& records, const at::Tensor& user_table, const at::Tensor& item_table) {
    check_records(records);
    check_tables(user_table, item_table);
    at::NoGradGuard no_grad;
    const int64_t n = records.size(0);
    double sums[2] = {0, 0};
    for (int64_t start = 0; start < n; start += max_rows_) {
      const int64_t count = std::min(max_rows_, n - start);
      AT_DISPATCH_FLOATING_TYPES(flat_.scalar_type(), "dmtl_native_evaluate", [&] {
        scalar_t losses[2];
        step_impl<scalar_t>(p_, g_, rows<scalar_t>(records.data_ptr<int64_t>() + start * RECORD, user_table, item_table, count),
                            nullptr, ws_, losses, lambda_, low_, span_, keep_scale_, drop_threshold_, activation_,
                            attention_, /*backward=*/false);
        sums[0] += double(losses[0]) * count;
        sums[1] += double(losses[1]) * count;
      });
    }
    return losses_tensor(n ? sums[0] / n : 0.0, n ? sums[1] / n : 0.0);
  }

 private:
  // forward, backward and Adam on one batch
  template <typename T>
  void update(const Rows<T>& batch, at::Generator& generator, T* losses) {
    int16_t* draws = nullptr;
    if (dropout_) {
      draws = draws_.data_ptr<int16_t>();
      fill_draws(generator, draws, batch.count * p_[8].size(0));
    }
    flat_grad_.zero_();
    step_impl<T>(p_, g_, batch, draws, ws_, losses, lambda_, low_, span_,
                 keep_scale_, drop_threshold_, activation_, attention_, /*backward=*/true);
    adam_impl<T>(flat_.data_ptr<T>(), flat_grad_.data_ptr<T>(), exp_avg_.data_ptr<T>(), exp_avg_sq_.data_ptr<T>(),
                 flat_.numel(), ++step_, lr_, beta1_, beta2_, eps_, weight_decay_);
  }

  // The dropout's uniform int16 draws: the splitmix64 finaliser over a counter, keyed by one 64-bit draw
  // from the (seeded) torch generator per step; four draws per 64-bit word. ~10x cheaper than
  // torch's mt19937 random_ for the 16k words a 1024-row step needs.
  static void fill_draws(at::Generator& generator, int16_t* out, int64_t n) {
    uint64_t key;
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      key = at::check_generator<at::CPUGeneratorImpl>(generator)->random64();
    }
    const int64_t words = (n + 3) / 4;
    uint64_t* word = reinterpret_cast<uint64_t*>(out);
    const int64_t whole = n / 4;
#pragma omp simd
    for (int64_t i = 0; i < whole; ++i) word[i] = splitmix64(key + uint64_t(i + 1) * 0x9E3779B97F4A7C15ull);
    if (words > whole) {  // n not a multiple of 4: the last word's first draws
      const uint64_t last = splitmix64(key + uint64_t(whole + 1) * 0x9E3779B97F4A7C15ull);
      std::memcpy(out + whole * 4, &last, (n - whole * 4) * sizeof(int16_t));
    }
  }

  static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  template <typename T>
  Rows<T> rows(const int64_t* records, const at::Tensor& user_table, const at::Tensor& item_table,
               int64_t count) const {
    return Rows<T>{records, user_table.data_ptr<T>(), item_table.data_ptr<T>(), count, user_table.size(1),
                   item_table.size(1)};
  }

  at::Tensor losses_tensor(double rating, double profile) const {
    return at::tensor({rating, profile}, flat_.options().dtype(at::kDouble)).to(flat_.scalar_type());
  }

  void check_records(const at::Tensor& records) const {
    TORCH_CHECK(records.scalar_type() == at::kLong && records.dim() == 2 && records.size(1) == RECORD &&
                    records.is_contiguous() && records.device().is_cpu(),
                "dmtl_native.Step: records must come from Step.pack");
  }

  void check_tables(const at::Tensor& user_table, const at::Tensor& item_table) const {
    for (const auto* t : {&user_table, &item_table})
      TORCH_CHECK(t->scalar_type() == flat_.scalar_type() && t->dim() == 2 && t->is_contiguous() && t->device().is_cpu(),
                  "dmtl_native.Step: side-feature tables must be contiguous 2-d CPU tensors of the parameters' dtype");
    TORCH_CHECK(user_table.size(1) == p_[2].size(1) && item_table.size(1) == p_[4].size(1),
                "dmtl_native.Step: side-feature widths differ from the projections'");
  }

  std::vector<at::Tensor> p_, g_, ws_;
  at::Tensor batch_records_;  // the current batch's records, gathered contiguous
  at::Tensor draws_;          // the current batch's dropout draws
  at::Tensor flat_, flat_grad_, exp_avg_, exp_avg_sq_;
  double lambda_, low_, span_;
  bool dropout_;
  double keep_scale_, drop_threshold_;
  int64_t activation_, attention_;
  double lr_, weight_decay_, beta1_, beta2_, eps_;
  int64_t max_rows_, step_ = 0;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pybind11::class_<Step>(m, "Step")
      .def(pybind11::init<std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor, at::Tensor, int64_t, double,
                          double, double, bool, double, double, int64_t, int64_t, double, double, double, double,
                          double>())
      .def("dropout_draws", &Step::dropout_draws, "the dropout draws the next step would use (advances the generator)")
      .def("pack", &Step::pack, "per-row tensors -> one 64-byte record per row (checks every index)")
      .def("train_epoch", &Step::train_epoch, "one epoch of steps over a permutation -> mean (rating, profiling) loss")
      .def("train", &Step::train, "one step on one batch -> its (rating loss, profiling loss)")
      .def("evaluate", &Step::evaluate, "forward and losses only, in chunks -> mean (rating loss, profiling loss)");
}
