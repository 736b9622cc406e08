// Fused CPU selective scan (forward and hand-written backward) for policies/ssm/scan.py.
//
// Plain C ABI, no torch headers: it compiles in about a second and is called through ctypes.
// Work is shared out with OpenMP; the library links libgomp.so.1, which resolves to the copy
// torch has already loaded, so the scan runs on torch's own thread team (torch.set_num_threads)
// instead of a second pool fighting it for the cores.
// Semantics are mamba-ssm's selective_scan_ref:
//   dt = r_t softplus?(delta + bias) (r: DiSPo's step scale, 1 when absent);
//   h_t = exp(dt A) h_{t-1} + q B_t u_t; y_t = C_t . h_t + D u_t;
//   out = y * silu(z); with q = dt (Euler, mamba-ssm) or, with zoh, q = (exp(dt A) - 1) / A
//   (zero-order hold, the DiSPo paper's Eq. 1).
// Layouts (all contiguous, channels last so that the innermost loops run over kLanes adjacent
// channels of one group and vectorise, exp included, through glibc's vector math library):
//   u, delta, z, out: (batch, L, dim); A: (N, dim); B, C: (batch, groups, L, N) (channel d reads
//   group d / (dim / groups)); D, delta_bias: (dim); scale: (batch, L); last_state: (batch, N, dim).
// Null pointers mean "absent" (D, z, delta_bias, scale, last_state). The scale gets no gradient.
// reverse_half: the second half of the groups scans backward in time (t = L-1 ... 0), each
// token with its own step scale: a bidirectional layer's two scans in one call, no flipped copies.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kLanes = 128;

// exp inlined into the vectorised loops: glibc's vector exp is a call that clobbers every vector
// register, so each use spills the loop's live values. float: Cody-Waite reduction to
// r in [-ln2/2, ln2/2] and a degree-6 Taylor polynomial (relative error < 2.5e-7, about 2 ulp);
// double keeps std::exp, so the float64 gradient checks stay exact.
inline float fast_exp(float x) {
    x = std::min(std::max(x, -87.0f), 88.0f);
    const float n = std::nearbyint(x * 1.44269504f);
    const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
    const float p =
        1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    return p * __builtin_bit_cast(float, bits);
}
inline double fast_exp(double x) { return std::exp(x); }

// Branch-free, so that the loops calling it vectorise: log(1 + e^x) = max(x, 0) + log1p(e^-|x|).
template <typename T>
inline T softplus(T x) { return std::max(x, T(0)) + std::log1p(std::exp(-std::abs(x))); }

template <typename T>
inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

// The zero-order hold q = (exp(dt A) - 1) / A = dt h(x), x = dt A, h(x) = (e^x - 1) / x, from the
// decay e^x already computed (vectorised, unlike expm1) and 1 / A (per channel and state entry,
// so no division per step); its series near 0, where the closed form cancels (and x = 0 for
// padding, dt = 0).
template <typename T>
inline T zoh_hold(T dt, T x, T decay, T inv_a) {
    const bool small = std::abs(x) < T(1e-2);
    const T series = dt * (T(1) + x * (T(1) / T(2) + x * (T(1) / T(6) + x * (T(1) / T(24) + x / T(120)))));
    return small ? series : (decay - T(1)) * inv_a;
}

// d/dA of the same, dt^2 g(x) = (x e^x - e^x + 1) / A^2 with g(x) = (x e^x - e^x + 1) / x^2;
// series below |x| = 0.1.
template <typename T>
inline T zoh_slope(T dt, T x, T decay, T inv_a) {
    const bool small = std::abs(x) < T(0.1);
    const T series = T(1) / T(2) + x * (T(1) / T(3) + x * (T(1) / T(8) + x * (T(1) / T(30) + x / T(144))));
    return small ? dt * dt * series : (x * decay - decay + T(1)) * (inv_a * inv_a);
}

template <typename T>
struct Scan {
    int64_t dim, L, N, groups;
    const T *u, *delta, *A, *B, *C, *D, *z, *bias, *scale;
    bool softplus_delta, zoh, reverse_half;
    std::vector<T> inv_A;  // 1 / A (N, dim): the zero-order hold without a division per step

    // Per-thread work space for one block of channels.
    struct Block {
        std::vector<T> dt, du, y, h, H, E;
        Block(int64_t L, int64_t N, bool keep_states)
            : dt(L * kLanes), du(kLanes), y(L * kLanes), h(N * kLanes),
              H(keep_states ? (L + 1) * N * kLanes : 0), E(keep_states ? L * N * kLanes : 0) {}
    };

    // Calls fn(b, d0, w, group) for every block of at most kLanes channels of one group.
    template <typename Fn>
    void for_blocks(int64_t b0, int64_t b1, Fn fn) const {
        const int64_t per_group = dim / groups;
        for (int64_t b = b0; b < b1; ++b)
            for (int64_t g = 0; g < groups; ++g)
                for (int64_t d0 = g * per_group; d0 < (g + 1) * per_group; d0 += kLanes)
                    fn(b, d0, std::min(kLanes, (g + 1) * per_group - d0), g);
    }

    // The time of a group's k-th scan step: t = k, or L - 1 - k in a reversed group.
    int64_t time_of(int64_t k, int64_t g) const { return reverse_half && 2 * g >= groups ? L - 1 - k : k; }

    // Runs the recurrence over one block: step sizes into s.dt, pre-gate outputs y + D u into
    // s.y (both by time), the final state in s.h, and (when s.H is sized) the state after scan
    // step k into H[k + 1] (H[0] stays zero: the state before the first step) and that step's
    // decay exp(dt A) into E[k], for the backward pass.
    void forward_block(int64_t b, int64_t d0, int64_t w, int64_t g, Block& s) const {
        const T* Bg = B + (b * groups + g) * L * N;
        const T* Cg = C + (b * groups + g) * L * N;
        const bool keep = !s.H.empty();
        T* __restrict__ h = s.h.data();
        std::fill(s.h.begin(), s.h.end(), T(0));
        if (keep) std::fill(s.H.begin(), s.H.begin() + N * kLanes, T(0));
        for (int64_t k = 0; k < L; ++k) {
            const int64_t t = time_of(k, g);
            const int64_t at = (b * L + t) * dim + d0;
            T* __restrict__ dt = s.dt.data() + t * kLanes;
            T* __restrict__ du = s.du.data();
            T* __restrict__ y = s.y.data() + t * kLanes;
            for (int64_t l = 0; l < w; ++l) dt[l] = delta[at + l];
            if (bias)
                for (int64_t l = 0; l < w; ++l) dt[l] += bias[d0 + l];
            if (softplus_delta)
                for (int64_t l = 0; l < w; ++l) dt[l] = softplus(dt[l]);
            if (scale) {
                const T r = scale[b * L + t];
                for (int64_t l = 0; l < w; ++l) dt[l] *= r;
            }
            for (int64_t l = 0; l < w; ++l) {
                du[l] = dt[l] * u[at + l];
                y[l] = D ? D[d0 + l] * u[at + l] : T(0);
            }
            for (int64_t n = 0; n < N; ++n) {
                const T* __restrict__ a = A + n * dim + d0;
                const T bn = Bg[t * N + n], cn = Cg[t * N + n];
                T* __restrict__ hn = h + n * kLanes;
                if (zoh) {
                    T* Hn = keep ? s.H.data() + ((k + 1) * N + n) * kLanes : nullptr;
                    T* En = keep ? s.E.data() + (k * N + n) * kLanes : nullptr;
                    forward_zoh_entry(dt, a, inv_A.data() + n * dim + d0, u + at, bn, cn, w, hn, y, Hn, En);
                    continue;
                }
                if (keep) {
                    T* __restrict__ Hn = s.H.data() + ((k + 1) * N + n) * kLanes;
                    T* __restrict__ En = s.E.data() + (k * N + n) * kLanes;
#pragma GCC ivdep
                    for (int64_t l = 0; l < w; ++l) {
                        const T decay = fast_exp(dt[l] * a[l]);
                        hn[l] = decay * hn[l] + du[l] * bn;
                        y[l] += cn * hn[l];
                        Hn[l] = hn[l];
                        En[l] = decay;
                    }
                } else {
#pragma GCC ivdep
                    for (int64_t l = 0; l < w; ++l) {
                        hn[l] = fast_exp(dt[l] * a[l]) * hn[l] + du[l] * bn;
                        y[l] += cn * hn[l];
                    }
                }
            }
        }
    }

    // One state entry's step with zero-order hold: the decay computed once, for both the state
    // and q = zoh_hold; H and E (when given) receive the state and the decay for the backward pass.
    static void forward_zoh_entry(const T* __restrict__ dt, const T* __restrict__ a, const T* __restrict__ inv_a,
                                  const T* __restrict__ u, T bn,
                                  T cn, int64_t w, T* __restrict__ hn, T* __restrict__ y, T* __restrict__ Hn,
                                  T* __restrict__ En) {
#pragma GCC ivdep
        for (int64_t l = 0; l < w; ++l) {
            const T x = dt[l] * a[l], decay = fast_exp(x);
            hn[l] = decay * hn[l] + zoh_hold(dt[l], x, decay, inv_a[l]) * u[l] * bn;
            y[l] += cn * hn[l];
            if (Hn) {
                Hn[l] = hn[l];
                En[l] = decay;
            }
        }
    }

    // Blocks are independent in the forward pass: all of them are shared among the threads.
    void forward(int64_t batch, T* out, T* last_state) const {
        const int64_t per_group = dim / groups, blocks = (per_group + kLanes - 1) / kLanes;
        const int64_t total = batch * groups * blocks;
#pragma omp parallel
        {
            Block s(L, N, false);
#pragma omp for schedule(static)
            for (int64_t item = 0; item < total; ++item) {
                const int64_t b = item / (groups * blocks), g = item / blocks % groups;
                const int64_t d0 = g * per_group + item % blocks * kLanes;
                const int64_t w = std::min(kLanes, (g + 1) * per_group - d0);
                forward_block(b, d0, w, g, s);
                for (int64_t t = 0; t < L; ++t) {
                    const int64_t at = (b * L + t) * dim + d0;
                    const T* y = s.y.data() + t * kLanes;
                    for (int64_t l = 0; l < w; ++l)
                        out[at + l] = z ? y[l] * z[at + l] * sigmoid(z[at + l]) : y[l];
                }
                if (last_state)
                    for (int64_t n = 0; n < N; ++n)
                        for (int64_t l = 0; l < w; ++l)
                            last_state[(b * N + n) * dim + d0 + l] = s.h[n * kLanes + l];
            }
        }
    }

    // Gradients for batches [b0, b1). gu, gdelta, gz, gB, gC are written for those batches
    // only (gB, gC accumulate over channels and must start at zero); gA (N, dim), gD and gbias
    // are this slice's partial sums over the batch (zeroed here), summed by the caller.
    void backward(int64_t b0, int64_t b1, const T* gout, T* gu, T* gdelta, T* gA, T* gB, T* gC, T* gD,
                  T* gz, T* gbias) const {
        if (zoh)
            backward_impl<true>(b0, b1, gout, gu, gdelta, gA, gB, gC, gD, gz, gbias);
        else
            backward_impl<false>(b0, b1, gout, gu, gdelta, gA, gB, gC, gD, gz, gbias);
    }

    // One instantiation per discretisation, so that each inner loop compiles on its own.
    template <bool kZoh>
    void backward_impl(int64_t b0, int64_t b1, const T* gout, T* gu, T* gdelta, T* gA, T* gB, T* gC, T* gD,
                       T* gz, T* gbias) const {
        std::fill(gA, gA + N * dim, T(0));
        if (gD) std::fill(gD, gD + dim, T(0));
        if (gbias) std::fill(gbias, gbias + dim, T(0));
        Block s(L, N, true);
        std::vector<T> gy_all(L * kLanes), gnext(N * kLanes), gstep_v(kLanes), gu_v(kLanes);
        for_blocks(b0, b1, [&](int64_t b, int64_t d0, int64_t w, int64_t g) {
            forward_block(b, d0, w, g, s);
            const T* Bg = B + (b * groups + g) * L * N;
            const T* Cg = C + (b * groups + g) * L * N;
            T* gBg = gB + (b * groups + g) * L * N;
            T* gCg = gC + (b * groups + g) * L * N;
            for (int64_t t = 0; t < L; ++t) {  // through the gate: dLoss/dy
                const int64_t at = (b * L + t) * dim + d0;
                const T* y = s.y.data() + t * kLanes;
                T* gy = gy_all.data() + t * kLanes;
                for (int64_t l = 0; l < w; ++l) {
                    T grad = gout[at + l];
                    if (z) {
                        const T zt = z[at + l], sg = sigmoid(zt);
                        gz[at + l] = grad * y[l] * sg * (T(1) + zt * (T(1) - sg));
                        grad *= zt * sg;
                    }
                    gy[l] = grad;
                    if (gD) gD[d0 + l] += grad * u[at + l];
                }
            }
            std::fill(gnext.begin(), gnext.end(), T(0));  // dLoss/dh from later scan steps
            for (int64_t k = L - 1; k >= 0; --k) {
                const int64_t t = time_of(k, g);
                const int64_t at = (b * L + t) * dim + d0;
                const T* __restrict__ dt = s.dt.data() + t * kLanes;
                const T* __restrict__ gy = gy_all.data() + t * kLanes;
                const T* __restrict__ ut = u + at;
                T* __restrict__ gstep = gstep_v.data();
                T* __restrict__ gut = gu_v.data();
                for (int64_t l = 0; l < w; ++l) gstep[l] = gut[l] = T(0);
                for (int64_t n = 0; n < N; ++n) {
                    const T* __restrict__ a = A + n * dim + d0;
                    const T* __restrict__ inv_a = inv_A.data() + n * dim + d0;
                    const T* __restrict__ ht = s.H.data() + ((k + 1) * N + n) * kLanes;
                    const T* __restrict__ hprev = s.H.data() + (k * N + n) * kLanes;
                    const T* __restrict__ decay = s.E.data() + (k * N + n) * kLanes;
                    T* __restrict__ gn_carry = gnext.data() + n * kLanes;
                    T* __restrict__ gAn = gA + n * dim + d0;
                    const T bn = Bg[t * N + n], cn = Cg[t * N + n];
                    T sum_gc = T(0), sum_gb = T(0);
                    if constexpr (kZoh) {
#pragma GCC ivdep
                        for (int64_t l = 0; l < w; ++l) {
                            const T gh = gn_carry[l] + gy[l] * cn;  // dLoss/dh_t
                            const T x = dt[l] * a[l], q = zoh_hold(dt[l], x, decay[l], inv_a[l]);
                            sum_gc += gy[l] * ht[l];
                            gstep[l] += gh * decay[l] * (a[l] * hprev[l] + bn * ut[l]);
                            const T slope = zoh_slope(dt[l], x, decay[l], inv_a[l]);
                            gAn[l] += gh * (dt[l] * decay[l] * hprev[l] + slope * bn * ut[l]);
                            sum_gb += gh * q * ut[l];
                            gut[l] += gh * q * bn;
                            gn_carry[l] = gh * decay[l];
                        }
                    } else {
#pragma GCC ivdep
                        for (int64_t l = 0; l < w; ++l) {
                            const T gh = gn_carry[l] + gy[l] * cn;  // dLoss/dh_t
                            sum_gc += gy[l] * ht[l];
                            gstep[l] += gh * (a[l] * decay[l] * hprev[l] + bn * ut[l]);
                            gAn[l] += gh * dt[l] * decay[l] * hprev[l];
                            sum_gb += gh * dt[l] * ut[l];
                            gut[l] += gh * dt[l] * bn;
                            gn_carry[l] = gh * decay[l];  // flows on to the previous step's state
                        }
                    }
                    gCg[t * N + n] += sum_gc;
                    gBg[t * N + n] += sum_gb;
                }
                for (int64_t l = 0; l < w; ++l) {
                    gu[at + l] = gut[l] + gy[l] * (D ? D[d0 + l] : T(0));
                    T grad_delta = scale ? gstep[l] * scale[b * L + t] : gstep[l];
                    if (softplus_delta) grad_delta *= sigmoid(delta[at + l] + (bias ? bias[d0 + l] : T(0)));
                    gdelta[at + l] = grad_delta;
                    if (gbias) gbias[d0 + l] += grad_delta;
                }
            }
        });
    }
};

template <typename T>
Scan<T> make_scan(int64_t dim, int64_t L, int64_t N, int64_t groups, const void* u, const void* delta,
                  const void* A, const void* B, const void* C, const void* D, const void* z, const void* bias,
                  const void* scale, int softplus_delta, int zoh, int reverse_half) {
    Scan<T> scan{dim, L, N, groups,
                 static_cast<const T*>(u), static_cast<const T*>(delta), static_cast<const T*>(A),
                 static_cast<const T*>(B), static_cast<const T*>(C), static_cast<const T*>(D),
                 static_cast<const T*>(z), static_cast<const T*>(bias), static_cast<const T*>(scale),
                 softplus_delta != 0, zoh != 0, reverse_half != 0, {}};
    if (scan.zoh) {
        scan.inv_A.resize(N * dim);
        for (int64_t i = 0; i < N * dim; ++i) scan.inv_A[i] = T(1) / scan.A[i];
    }
    return scan;
}

}  // namespace

#define SCAN_ARGS int64_t dim, int64_t L, int64_t N, int64_t groups, const void *u, const void *delta, \
    const void *A, const void *B, const void *C, const void *D, const void *z, const void *bias, const void *scale, \
    int softplus_delta, int zoh, int reverse_half
#define SCAN_PASS dim, L, N, groups, u, delta, A, B, C, D, z, bias, scale, softplus_delta, zoh, reverse_half

// The backward pass splits the batch into `parts` contiguous slices, one per thread; gA, gD
// and gbias then hold one partial sum per part ((parts, N, dim), (parts, dim)).
#define DEFINE_SCAN(T, suffix)                                                                         \
    extern "C" void scan_forward_##suffix(int64_t batch, SCAN_ARGS, void* out, void* last) {           \
        make_scan<T>(SCAN_PASS).forward(batch, static_cast<T*>(out), static_cast<T*>(last));         \
    }                                                                                                  \
    extern "C" void scan_backward_##suffix(int64_t batch, int64_t parts, SCAN_ARGS, const void* gout,  \
                                           void* gu, void* gdelta, void* gA, void* gB, void* gC,        \
                                           void* gD, void* gz, void* gbias) {                           \
        const auto scan = make_scan<T>(SCAN_PASS);                                                     \
        T *gA_parts = static_cast<T*>(gA), *gD_parts = static_cast<T*>(gD);                           \
        T* gbias_parts = static_cast<T*>(gbias);                                                       \
        _Pragma("omp parallel for num_threads(parts) schedule(static, 1)")                            \
        for (int64_t part = 0; part < parts; ++part) {                                                 \
            scan.backward(batch * part / parts, batch * (part + 1) / parts, static_cast<const T*>(gout), \
                          static_cast<T*>(gu), static_cast<T*>(gdelta), gA_parts + part * N * dim,     \
                          static_cast<T*>(gB), static_cast<T*>(gC), gD_parts ? gD_parts + part * dim : nullptr, \
                          static_cast<T*>(gz), gbias_parts ? gbias_parts + part * dim : nullptr);       \
        }                                                                                              \
    }

DEFINE_SCAN(float, f32)
DEFINE_SCAN(double, f64)
