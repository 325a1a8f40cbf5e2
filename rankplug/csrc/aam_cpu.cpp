// rankplug's fused CPU kernels for the additive angular margin head (label-geometry paper Eq. 7-8, MATH §6).
//
// Two autograd functions, each one node with its backward in C++, so that a forward + backward of
// `head.loss(head(features), labels)` makes no Python call after the two forwards:
//
//   scaled_cosine(f, W, s)  ->  s cos(theta) = s (f_i . W_j) / (||f_i|| ||W_j||), (N, C)       (Eq. 7)
//   margin_ce(z, y, s, m, r) -> cross entropy of z with the target logit s psi(z_y / s), reduced   (Eq. 8)
//
// with psi the angle-addition form of cos(theta + m) and ArcFace's fallback, floored exactly as the eager path in
// rankplug/functional/angular.py (`_scaled_margin`, `_ScaledCosine`): the same formulas, the same branches, the
// same floors (1e-12 under each norm, s^2 * 1e-12 under s^2 sin^2). The element-wise work (norms, the margin, the
// softmax's gradient, the radial parts of the normalisations' gradient) runs in plain loops over the rows; the
// three matrix products and the log-softmax stay ATen's. Dense, contiguous float32 / float64 CPU tensors only:
// rankplug's Python side checks that and takes the eager path otherwise. Not twice differentiable.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/python_variable.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace rankplug_aam {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr double kNormFloor = 1e-12;     // torch.nn.functional.normalize's floor on a norm
constexpr double kSinSquaredFloor = 1e-12;  // the floor under sin^2(theta) (cosine_with_margin)
constexpr int64_t kGrain = 32768;
constexpr int64_t kHandSoftmaxClasses = 32;  // up to this many classes the softmax is computed by hand        // elements per parallel chunk: small problems run on one thread

int64_t row_grain(int64_t width) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, width)); }

// 1 / max(||row||, 1e-12) for each row of a (rows, width) matrix, accumulated in double; with `unit`, also the
// normalised rows row / max(||row||, 1e-12).
// Sum of squares of a row: float32 in float with 16 independent partial sums (vectorisable; the norm of
// a row of d values loses about log2(d / 16) ulps at worst), float64 in double.
template <typename T>
T sum_of_squares(const T* row, int64_t width) {
  T lanes[16] = {0};
  int64_t k = 0;
  for (; k + 16 <= width; k += 16) {
    for (int l = 0; l < 16; ++l) lanes[l] += row[k + l] * row[k + l];
  }
  T total = 0;
  for (int l = 0; l < 16; ++l) total += lanes[l];
  for (; k < width; ++k) total += row[k] * row[k];
  return total;
}

// 1 / max(||row||, 1e-12) for each row of a (rows, width) matrix; with `unit`, also the normalised rows
// row / max(||row||, 1e-12).
template <typename T>
void inverse_norms(const T* a, int64_t rows, int64_t width, T* inverse, T* unit) {
  at::parallel_for(0, rows, row_grain(width), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* row = a + i * width;
      const T norm = std::sqrt(sum_of_squares(row, width));
      // NaN stays NaN (std::max would drop it).
      const T floored = std::isnan(norm) ? norm : std::max(norm, static_cast<T>(kNormFloor));
      const T inv = static_cast<T>(1) / floored;
      inverse[i] = inv;
      if (unit != nullptr) {
        T* out = unit + i * width;
        for (int64_t c = 0; c < width; ++c) out[c] = row[c] * inv;
      }
    }
  });
}

void check_matrix(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 2 && t.is_contiguous() && t.layout() == at::kStrided,
              "rankplug aam_cpu: ", name, " must be a contiguous 2-d CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "rankplug aam_cpu: ", name, " must be float32 or float64");
}

struct ScaledCosine : public torch::autograd::Function<ScaledCosine> {
  static Tensor forward(AutogradContext* ctx, const Tensor& features, const Tensor& weight, double scale) {
    check_matrix(features, "features");
    check_matrix(weight, "weight");
    TORCH_CHECK(features.scalar_type() == weight.scalar_type() && features.size(1) == weight.size(1),
                "rankplug aam_cpu: features and weight must share a dtype and a width");
    const int64_t n = features.size(0), d = features.size(1), c = weight.size(0);
    Tensor inv_f = at::empty({n}, features.options());
    Tensor inv_w = at::empty({c}, weight.options());
    Tensor unit_w = at::empty_like(weight);
    AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "rankplug_scaled_cosine", [&] {
      inverse_norms<scalar_t>(features.data_ptr<scalar_t>(), n, d, inv_f.data_ptr<scalar_t>(), nullptr);
      inverse_norms<scalar_t>(weight.data_ptr<scalar_t>(), c, d, inv_w.data_ptr<scalar_t>(), unit_w.data_ptr<scalar_t>());
    });
    Tensor out = at::mm(features, unit_w.t());
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "rankplug_scaled_cosine_rows", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      const scalar_t* inv = inv_f.data_ptr<scalar_t>();
      const scalar_t s = static_cast<scalar_t>(scale);
      at::parallel_for(0, n, row_grain(c), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t factor = inv[i] * s;  // s / ||f_i||
          for (int64_t j = 0; j < c; ++j) o[i * c + j] *= factor;
        }
      });
    });
    // With no more classes than feature values (C <= d) the backward takes the radial dot products from the
    // (N, C) output, which it keeps (as the eager path does); otherwise from row dot products of the (N, d) and
    // (C, d) gradients, and the output is not kept (so it may be changed in place).
    ctx->save_for_backward({features, unit_w, inv_f, inv_w, c <= d ? out : Tensor()});
    ctx->saved_data["scale"] = scale;
    return out;
  }

  // dL/df_i = M_i - f_i (f_i . M_i) / ||f_i||^2 with M = (G * s / ||f||) W^, and
  // dL/dW_j = (P_j - W^_j (W^_j . P_j)) / ||W_j|| with P = (G * s / ||f||)^T f; the two radial dot products are
  // the row and column sums of G * out (rankplug.functional.angular._ScaledCosine's docs).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "rankplug's fused angular-margin kernel is not twice differentiable (create_graph=True); set "
                "RANKPLUG_KERNELS=0 to use the eager path");
    auto saved = ctx->get_saved_variables();
    const Tensor& features = saved[0];
    const Tensor& unit_w = saved[1];
    const Tensor& inv_f = saved[2];
    const Tensor& inv_w = saved[3];
    const Tensor& out = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    if (!grads[0].defined()) return {Tensor(), Tensor(), Tensor()};
    const Tensor g = grads[0].to(features.scalar_type()).contiguous();
    const int64_t n = g.size(0), c = g.size(1), d = features.size(1);
    const bool need_f = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    const bool from_out = out.defined();
    Tensor scaled = at::empty_like(g);
    Tensor row_radial = at::empty({n}, g.options());
    Tensor col_radial = at::zeros({c}, g.options());
    Tensor grad_f, grad_w;
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "rankplug_scaled_cosine_backward", [&] {
      const scalar_t* gp = g.data_ptr<scalar_t>();
      const scalar_t* op = from_out ? out.data_ptr<scalar_t>() : nullptr;
      const scalar_t* inv = inv_f.data_ptr<scalar_t>();
      scalar_t* sp = scaled.data_ptr<scalar_t>();
      scalar_t* rr = row_radial.data_ptr<scalar_t>();
      scalar_t* cr = col_radial.data_ptr<scalar_t>();
      const scalar_t s = static_cast<scalar_t>(scale);
      at::parallel_for(0, n, row_grain(c), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t factor = inv[i] * s;
          scalar_t dot = 0;
          for (int64_t j = 0; j < c; ++j) {
            if (op != nullptr) dot += gp[i * c + j] * op[i * c + j];
            sp[i * c + j] = gp[i * c + j] * factor;
          }
          rr[i] = dot * inv[i] * inv[i];  // (f_i . M_i) / ||f_i||^2 (C <= d)
        }
      });
      if (need_w && op != nullptr) {  // W^_j . P_j = sum_i G_ij out_ij, in row order (deterministic)
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < c; ++j) cr[j] += gp[i * c + j] * op[i * c + j];
        }
      }
    });
    if (need_f) {
      grad_f = at::mm(scaled, unit_w);
      AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "rankplug_scaled_cosine_grad_features", [&] {
        scalar_t* gf = grad_f.data_ptr<scalar_t>();
        const scalar_t* fp = features.data_ptr<scalar_t>();
        const scalar_t* rr = row_radial.data_ptr<scalar_t>();
        const scalar_t* inv = inv_f.data_ptr<scalar_t>();
        at::parallel_for(0, n, row_grain(d), [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            scalar_t r = rr[i];
            if (!from_out) {  // C > d: (f_i . M_i) / ||f_i||^2 from the row itself
              scalar_t dot = 0;
              for (int64_t k = 0; k < d; ++k) dot += fp[i * d + k] * gf[i * d + k];
              r = dot * inv[i] * inv[i];
            }
            for (int64_t k = 0; k < d; ++k) gf[i * d + k] -= fp[i * d + k] * r;
          }
        });
      });
    }
    if (need_w) {
      grad_w = at::mm(scaled.t(), features);
      AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "rankplug_scaled_cosine_grad_weight", [&] {
        scalar_t* gw = grad_w.data_ptr<scalar_t>();
        const scalar_t* up = unit_w.data_ptr<scalar_t>();
        const scalar_t* cr = col_radial.data_ptr<scalar_t>();
        const scalar_t* iw = inv_w.data_ptr<scalar_t>();
        at::parallel_for(0, c, row_grain(d), [&](int64_t begin, int64_t end) {
          for (int64_t j = begin; j < end; ++j) {
            scalar_t q = cr[j];
            if (!from_out) {  // C > d: W^_j . P_j from the row itself
              q = 0;
              for (int64_t k = 0; k < d; ++k) q += up[j * d + k] * gw[j * d + k];
            }
            const scalar_t w = iw[j];
            for (int64_t k = 0; k < d; ++k) gw[j * d + k] = (gw[j * d + k] - up[j * d + k] * q) * w;
          }
        });
      });
    }
    return {grad_f, grad_w, Tensor()};
  }
};

// Reductions, as rankplug passes them: 0 "none", 1 "mean", 2 "sum".
struct MarginCrossEntropy : public torch::autograd::Function<MarginCrossEntropy> {
  static Tensor forward(AutogradContext* ctx, const Tensor& logits, const Tensor& targets, double scale,
                        double margin, int64_t reduction) {
    check_matrix(logits, "logits");
    TORCH_CHECK(targets.device().is_cpu() && targets.dim() == 1 && targets.scalar_type() == at::kLong &&
                    targets.is_contiguous() && targets.size(0) == logits.size(0),
                "rankplug aam_cpu: targets must be a contiguous (N,) int64 CPU tensor");
    TORCH_CHECK(reduction >= 0 && reduction <= 2, "rankplug aam_cpu: reduction must be 0, 1 or 2");
    const int64_t n = logits.size(0), c = logits.size(1);
    const int64_t* y = targets.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      TORCH_CHECK(y[i] >= 0 && y[i] < c, "rankplug aam_cpu: target ", y[i], " is out of bounds for ", c, " classes");
    }
    // Few classes: the softmax by hand, in the same pass as the margin, keeping the probabilities; more: the
    // margin into a copy, then ATen's vectorised log-softmax, keeping the log-probabilities.
    const bool by_hand = c <= kHandSoftmaxClasses;
    Tensor slope = at::empty({n}, logits.options());
    Tensor loss = reduction == 0 ? at::empty({n}, logits.options()) : at::empty({}, logits.options());
    Tensor kept = by_hand ? at::empty_like(logits) : logits.clone();
    AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "rankplug_margin", [&] {
      scalar_t* sl = slope.data_ptr<scalar_t>();
      const scalar_t s2 = static_cast<scalar_t>(scale * scale);
      const scalar_t cos_m = static_cast<scalar_t>(std::cos(margin));
      const scalar_t sin_m = static_cast<scalar_t>(std::sin(margin));
      const scalar_t shift = static_cast<scalar_t>(scale * margin * std::sin(margin));  // s m sin(m)
      const scalar_t inside_low = static_cast<scalar_t>(-scale * std::cos(margin));    // -s cos(m)
      const scalar_t floor = static_cast<scalar_t>(scale * scale * kSinSquaredFloor);
      // s psi(t / s) of the target logit t = s cos(theta_y), and psi' into `slope_out`.
      auto with_margin = [&](scalar_t t, scalar_t& slope_out) -> scalar_t {
        if (margin == 0.0) {
          slope_out = 1;
          return t;
        }
        const scalar_t sin_squared = s2 - t * t;  // s^2 sin^2(theta)
        const scalar_t floored = std::isnan(sin_squared) ? sin_squared : std::max(sin_squared, floor);
        const scalar_t sin_theta = std::sqrt(floored);
        if (t >= inside_low) {  // theta + m <= pi: s cos(theta + m) = cos(m) t - sin(m) s sin(theta)
          const scalar_t ratio = sin_squared >= floor ? t / sin_theta : static_cast<scalar_t>(0);
          slope_out = cos_m + sin_m * ratio;
          return t * cos_m - sin_theta * sin_m;
        }
        slope_out = 1;  // ArcFace's fallback s cos(theta) - s m sin(m); a NaN lands here too
        return t - shift;
      };
      scalar_t* out = loss.data_ptr<scalar_t>();
      double total = 0;  // accumulated in double, as ATen's CPU reductions of float32 do
      if (by_hand) {
        const scalar_t* z = logits.data_ptr<scalar_t>();
        scalar_t* p = kept.data_ptr<scalar_t>();
        for (int64_t i = 0; i < n; ++i) {
          const scalar_t* row = z + i * c;
          scalar_t* prob = p + i * c;
          const int64_t target = y[i];
          const scalar_t psi = with_margin(row[target], sl[i]);
          scalar_t top = psi;  // a NaN psi stays the maximum, so the row comes out NaN
          for (int64_t j = 0; j < c; ++j) {
            if (j != target && row[j] > top) top = row[j];
          }
          scalar_t sum = 0;
          for (int64_t j = 0; j < c; ++j) {
            const scalar_t e = std::exp((j == target ? psi : row[j]) - top);
            prob[j] = e;
            sum += e;
          }
          const scalar_t inv = static_cast<scalar_t>(1) / sum;
          for (int64_t j = 0; j < c; ++j) prob[j] *= inv;
          const scalar_t sample = std::log(sum) + top - psi;  // -log p_y
          if (reduction == 0) {
            out[i] = sample;
          } else {
            total += static_cast<double>(sample);
          }
        }
      } else {
        scalar_t* z = kept.data_ptr<scalar_t>();
        for (int64_t i = 0; i < n; ++i) {
          scalar_t& t = z[i * c + y[i]];
          t = with_margin(t, sl[i]);
        }
        kept = at::_log_softmax(kept, 1, false);
        const scalar_t* lp = kept.data_ptr<scalar_t>();
        for (int64_t i = 0; i < n; ++i) {
          if (reduction == 0) {
            out[i] = -lp[i * c + y[i]];
          } else {
            total -= static_cast<double>(lp[i * c + y[i]]);
          }
        }
      }
      if (reduction != 0) out[0] = static_cast<scalar_t>(reduction == 1 ? total / static_cast<double>(n) : total);
    });
    ctx->save_for_backward({kept, targets, slope});
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["by_hand"] = by_hand;
    return loss;
  }

  // d loss / d z_j = w_i p_ij for j != y_i and w_i (p_iy - 1) psi'(cos theta_y) for the target, w_i the
  // reduction's weight of sample i (its incoming gradient, over N for "mean").
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "rankplug's fused angular-margin kernel is not twice differentiable (create_graph=True); set "
                "RANKPLUG_KERNELS=0 to use the eager path");
    auto saved = ctx->get_saved_variables();
    const Tensor& kept = saved[0];  // probabilities (by hand) or log-probabilities
    const Tensor& targets = saved[1];
    const Tensor& slope = saved[2];
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const bool by_hand = ctx->saved_data["by_hand"].toBool();
    if (!grads[0].defined()) return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    const Tensor g = grads[0].to(kept.scalar_type()).contiguous();
    const int64_t n = kept.size(0), c = kept.size(1);
    Tensor grad = by_hand ? at::empty_like(kept) : at::exp(kept);
    AT_DISPATCH_FLOATING_TYPES(kept.scalar_type(), "rankplug_margin_nll_backward", [&] {
      scalar_t* gp = grad.data_ptr<scalar_t>();
      const scalar_t* pp = by_hand ? kept.data_ptr<scalar_t>() : gp;
      const scalar_t* gin = g.data_ptr<scalar_t>();
      const scalar_t* sl = slope.data_ptr<scalar_t>();
      const int64_t* y = targets.data_ptr<int64_t>();
      const scalar_t shared = reduction == 1 ? gin[0] / static_cast<scalar_t>(n) : gin[0];
      at::parallel_for(0, n, row_grain(c), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t w = reduction == 0 ? gin[i] : shared;
          scalar_t* row = gp + i * c;
          const scalar_t* prob = pp + i * c;
          for (int64_t j = 0; j < c; ++j) row[j] = prob[j] * w;
          row[y[i]] = (row[y[i]] - w) * sl[i];
        }
      });
    });
    return {grad, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor scaled_cosine(const Tensor& features, const Tensor& weight, double scale) {
  return ScaledCosine::apply(features, weight, scale);
}

Tensor margin_cross_entropy(const Tensor& logits, const Tensor& targets, double scale, double margin,
                            int64_t reduction) {
  return MarginCrossEntropy::apply(logits, targets, scale, margin, reduction);
}

// The head's hot path decides here, in one call, whether the kernel takes its arguments: plain (or Parameter)
// tensors with storage on the CPU, dense, float32 / float64 (features and weight alike), the expected shapes,
// outside CPU autocast. Anything else gets None and takes rankplug's eager path, which checks and words errors.
bool plain_tensor(py::handle obj, bool parameter_allowed) {
  if (THPVariable_CheckExact(obj.ptr())) return true;
  if (!parameter_allowed || !THPVariable_Check(obj.ptr())) return false;
  static PyObject* parameter = py::object(py::module_::import("torch.nn").attr("Parameter")).release().ptr();
  return reinterpret_cast<PyObject*>(Py_TYPE(obj.ptr())) == parameter;
}

bool suitable(const Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.layout() == at::kStrided && t.has_storage() && !t.is_conj() &&
         !t.is_neg() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

py::object try_scaled_cosine(py::handle features, py::handle weight, double scale, int64_t in_features) {
  if (!plain_tensor(features, false) || !plain_tensor(weight, true)) return py::none();
  const Tensor& f = THPVariable_Unpack(features.ptr());
  const Tensor& w = THPVariable_Unpack(weight.ptr());
  if (!suitable(f) || !suitable(w) || f.dim() != 2 || w.dim() != 2 || f.size(0) == 0 || f.size(1) != in_features ||
      w.size(1) != in_features || f.scalar_type() != w.scalar_type() ||
      at::autocast::is_autocast_enabled(at::kCPU)) {
    return py::none();
  }
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(ScaledCosine::apply(f.contiguous(), w.contiguous(), scale)));
}

py::object try_margin_cross_entropy(py::handle logits, py::handle targets, double scale, double margin,
                                    const std::string& reduction, int64_t num_classes) {
  if (!plain_tensor(logits, false) || !plain_tensor(targets, false)) return py::none();
  const Tensor& z = THPVariable_Unpack(logits.ptr());
  const Tensor& y = THPVariable_Unpack(targets.ptr());
  const int64_t code = reduction == "none" ? 0 : reduction == "mean" ? 1 : reduction == "sum" ? 2 : -1;
  if (code < 0 || !suitable(z) || z.dim() != 2 || z.size(0) == 0 || z.size(1) != num_classes || !y.defined() ||
      !y.device().is_cpu() || y.layout() != at::kStrided || !y.has_storage() || y.scalar_type() != at::kLong ||
      y.dim() != 1 || y.size(0) != z.size(0)) {
    return py::none();
  }
  return py::reinterpret_steal<py::object>(
      THPVariable_Wrap(MarginCrossEntropy::apply(z.contiguous(), y.contiguous(), scale, margin, code)));
}

}  // namespace rankplug_aam

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rankplug's fused CPU kernels for the additive angular margin head (MATH §6)";
  m.def("scaled_cosine", &rankplug_aam::scaled_cosine, "s cos(theta), (N, C), of (N, d) features and (C, d) class weights");
  m.def("try_scaled_cosine", &rankplug_aam::try_scaled_cosine,
        "scaled_cosine(features, weight, scale) if the kernel takes these arguments (see the source), else None");
  m.def("try_margin_cross_entropy", &rankplug_aam::try_margin_cross_entropy,
        "margin_cross_entropy(logits, targets, scale, margin, reduction) if the kernel takes them, else None");
  m.def("margin_cross_entropy", &rankplug_aam::margin_cross_entropy,
        "cross entropy with the additive angular margin on the target logit; reduction 0 none, 1 mean, 2 sum");
}
