// binding.cpp - the nanobragg._core extension module.
//
// Marshalling only: Python dicts, bytes and NumPy arrays <-> the C structs of
// nanobragg.h.  Every C allocation is owned by an RAII wrapper so that it is
// freed whatever path (success, C error, Python exception) is taken; every
// non-zero C return becomes ValueError(<the C message>) (MemoryError for NB_ENOMEM).  The GIL is released
// around nb_render and around the parsers of large inputs.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "nanobragg.h"

namespace py = pybind11;

namespace {

constexpr size_t kErrLen = 1024;

// NB_ENOMEM is MemoryError; every other engine error is ValueError.
[[noreturn]] void raise_c_error(const char *what, const char *err, int rc = NB_EINVAL) {
    std::string msg = (err && err[0]) ? std::string(err) : std::string(what) + " failed";
    if (rc == NB_ENOMEM) {
        PyErr_SetString(PyExc_MemoryError, msg.c_str());
        throw py::error_already_set();
    }
    throw py::value_error(msg);
}

// UTF-8 text from the engine (messages, headers) as str, never failing.
py::str decode_text(const char *text, size_t n = (size_t)-1) {
    if (!text) return py::str("");
    if (n == (size_t)-1) n = std::strlen(text);
    PyObject *o = PyUnicode_DecodeUTF8(text, (Py_ssize_t)n, "replace");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

// ------------------------------------------------------------ RAII owners --

struct SetupOwner {
    nb_setup s;
    SetupOwner() { std::memset(&s, 0, sizeof s); }
    ~SetupOwner() { nb_setup_free(&s); }
    SetupOwner(const SetupOwner &) = delete;
    SetupOwner &operator=(const SetupOwner &) = delete;
};

struct HklOwner {
    nb_hkl g;
    HklOwner() { std::memset(&g, 0, sizeof g); }
    ~HklOwner() { nb_hkl_free(&g); }
    HklOwner(const HklOwner &) = delete;
    HklOwner &operator=(const HklOwner &) = delete;
};

struct SmvOwner {
    nb_smv v;
    SmvOwner() { std::memset(&v, 0, sizeof v); }
    ~SmvOwner() { nb_smv_free(&v); }
    SmvOwner(const SmvOwner &) = delete;
    SmvOwner &operator=(const SmvOwner &) = delete;
};

// A read-only contiguous view of any buffer-protocol object (bytes,
// bytearray, memoryview, NumPy array), released on scope exit.
class ByteView {
  public:
    explicit ByteView(const py::object &obj, const char *what) {
        if (PyUnicode_Check(obj.ptr()))
            throw py::type_error(std::string(what) + ": expected bytes, got str");
        if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_SIMPLE) != 0) {
            PyErr_Clear();
            throw py::type_error(std::string(what) + ": expected a bytes-like object, got " +
                                 std::string(py::str(py::type::of(obj).attr("__name__"))));
        }
    }
    ~ByteView() { PyBuffer_Release(&view_); }
    ByteView(const ByteView &) = delete;
    ByteView &operator=(const ByteView &) = delete;
    const unsigned char *data() const { return static_cast<const unsigned char *>(view_.buf); }
    size_t size() const { return static_cast<size_t>(view_.len); }

  private:
    Py_buffer view_{};
};

// ----------------------------------------------------------- enum names --
//
// nb_params fields come from the C library's table (params_table.c,
// nb_params_find): the binding only converts Python values.

enum class Kind { Double, Int, Long, Enum };

// the name of an enum value, from the choices of the nb_params field `param`
const char *enum_to_name(const char *param, int v) {
    const char *name = nb_params_enum_name(nb_params_find(param), v);
    return name ? name : "unknown";
}

[[noreturn]] void bad_value(const std::string &key, const std::string &why) {
    throw py::value_error("parameter '" + key + "': " + why);
}

std::string type_name(const py::handle &h) { return std::string(py::str(py::type::of(h).attr("__name__"))); }

bool is_number(const py::handle &h) {
    if (PyUnicode_Check(h.ptr()) || PyBytes_Check(h.ptr())) return false;
    return PyNumber_Check(h.ptr()) != 0;
}

double to_double(const py::handle &h, const std::string &key) {
    if (!is_number(h)) bad_value(key, "expected a number, got " + type_name(h));
    double v = PyFloat_AsDouble(h.ptr());
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        bad_value(key, "expected a number, got " + type_name(h));
    }
    return v;
}

long long to_integer(const py::handle &h, const std::string &key, long long lo, long long hi) {
    if (!is_number(h)) bad_value(key, "expected an integer, got " + type_name(h));
    long long v;
    if (PyFloat_Check(h.ptr()) || (!PyLong_Check(h.ptr()) && !PyIndex_Check(h.ptr()))) {
        double d = to_double(h, key);   // float or float-like (numpy.float64): must be integral
        if (!std::isfinite(d) || d != std::floor(d) || d < (double)lo || d > (double)hi)
            bad_value(key, "expected an integer, got " + std::string(py::str(py::repr(h))));
        v = static_cast<long long>(d);
    } else {
        py::object idx = py::reinterpret_steal<py::object>(PyNumber_Index(h.ptr()));
        if (!idx) {
            PyErr_Clear();
            bad_value(key, "expected an integer, got " + type_name(h));
        }
        int overflow = 0;
        v = PyLong_AsLongLongAndOverflow(idx.ptr(), &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            bad_value(key, "integer out of range");
        }
    }
    if (v < lo || v > hi) bad_value(key, "integer out of range");
    return v;
}

int to_enum(const py::handle &h, const std::string &key, const nb_field &f) {
    std::string choices;
    for (int i = 0; f.choices[i]; i++) choices += std::string(i ? "|" : "") + f.choices[i];
    if (PyUnicode_Check(h.ptr())) {
        int v = nb_params_enum_value(&f, py::cast<std::string>(h).c_str());
        if (v >= 0) return v;
        bad_value(key, "expected one of " + choices + ", got '" + py::cast<std::string>(h) + "'");
    }
    if (!PyBool_Check(h.ptr()) && is_number(h)) {   // the C value itself is accepted too
        long long v = to_integer(h, key, std::numeric_limits<int>::min(), std::numeric_limits<int>::max());
        if (nb_params_enum_name(&f, (int)v)) return (int)v;
    }
    bad_value(key, "expected one of " + choices + ", got " + std::string(py::str(py::repr(h))));
}

size_t elem_size(Kind k) {
    switch (k) {
    case Kind::Double: return sizeof(double);
    case Kind::Long: return sizeof(long);
    default: return sizeof(int);
    }
}

// One field from a Python value, through the C table: every element is
// converted first, so a bad one leaves the field untouched.
void set_field(nb_params &p, const nb_field &f, const py::handle &value, const std::string &key) {
    std::vector<py::handle> items;
    py::sequence seq;
    if (f.count == 1) {
        items.push_back(value);
    } else {
        if (PyUnicode_Check(value.ptr()) || PyBytes_Check(value.ptr()) || !PySequence_Check(value.ptr()))
            bad_value(key, "expected a sequence of " + std::to_string(f.count) + " numbers, got " + type_name(value));
        seq = py::reinterpret_borrow<py::sequence>(value);
        if ((int)seq.size() != f.count)
            bad_value(key, "expected " + std::to_string(f.count) + " values, got " + std::to_string(seq.size()));
        for (int i = 0; i < f.count; i++) items.push_back(seq[i]);
    }
    auto item_key = [&](int i) { return f.count == 1 ? key : key + "[" + std::to_string(i) + "]"; };
    std::vector<double> reals;
    std::vector<long long> ints;
    for (int i = 0; i < f.count; i++) {
        switch (f.kind) {
        case NB_FIELD_DOUBLE: reals.push_back(to_double(items[i], item_key(i))); break;
        case NB_FIELD_INT:
            ints.push_back(to_integer(items[i], item_key(i), std::numeric_limits<int>::min(),
                                      std::numeric_limits<int>::max()));
            break;
        case NB_FIELD_LONG:
            ints.push_back(to_integer(items[i], item_key(i), std::numeric_limits<long>::min(),
                                      std::numeric_limits<long>::max()));
            break;
        case NB_FIELD_ENUM: ints.push_back(to_enum(items[i], item_key(i), f)); break;
        }
    }
    char err[kErrLen] = "";
    int rc = f.kind == NB_FIELD_DOUBLE ? nb_params_set(&p, f.name, reals.data(), f.count, nullptr, err, sizeof err)
                                       : nb_params_set_integers(&p, f.name, ints.data(), f.count, err, sizeof err);
    if (rc != NB_OK) raise_c_error("nb_params_set", err, rc);
}

// -------------------------------------------------- geometry (nb_setup) --

struct OutField {
    const char *name;
    Kind kind;
    size_t offset;
    int count;
    const char *enum_param;   // Kind::Enum: the nb_params field whose choices name the values
};

#define S_D(f) OutField{#f, Kind::Double, offsetof(nb_setup, f), 1, nullptr}
#define S_DN(f, n) OutField{#f, Kind::Double, offsetof(nb_setup, f), n, nullptr}
#define S_I(f) OutField{#f, Kind::Int, offsetof(nb_setup, f), 1, nullptr}
#define S_L(f) OutField{#f, Kind::Long, offsetof(nb_setup, f), 1, nullptr}
#define S_E(f) OutField{#f, Kind::Enum, offsetof(nb_setup, f), 1, #f}

// Every scalar and small-array field of nb_setup (pointers, the RNG state and
// the log are left out; the per-source and per-domain arrays are added
// separately as NumPy arrays).
const OutField kSetupFields[] = {
    // detector
    S_I(fpixels), S_I(spixels), S_D(pixel_m), S_D(detsize_f_m), S_D(detsize_s_m), S_D(distance_m),
    S_D(close_distance_m), S_DN(fdet, 3), S_DN(sdet, 3), S_DN(odet, 3), S_DN(pix0_m, 3), S_DN(beam, 3),
    S_DN(polar_vec, 3), S_DN(vert_vec, 3), S_DN(spindle, 3), S_DN(twotheta_axis, 3), S_D(Xbeam_m), S_D(Ybeam_m),
    S_D(Fbeam_m), S_D(Sbeam_m), S_D(Xclose_m), S_D(Yclose_m), S_D(Fclose_m), S_D(Sclose_m), S_D(ORGX_px),
    S_D(ORGY_px), S_DN(dials_origin_mm, 3), S_D(twotheta_rad), S_E(convention), S_E(pivot),
    S_I(curved_det), S_I(point_pixel), S_I(roi_xmin), S_I(roi_xmax), S_I(roi_ymin), S_I(roi_ymax),
    S_I(oversample), S_I(oversample_thick), S_I(oversample_polar), S_I(oversample_omega), S_D(subpixel_m),
    S_I(thicksteps), S_D(thick_m), S_D(thickstep_m), S_D(mu_per_m),
    // beam
    S_D(lambda0_m), S_D(fluence), S_D(flux), S_D(exposure_s), S_D(beamsize_m), S_D(polarization), S_I(nopolar),
    S_I(n_sources), S_I(divsteps), S_I(dispsteps), S_I(hdivsteps), S_I(vdivsteps), S_D(hdivrange_rad),
    S_D(vdivrange_rad), S_D(hdivstep_rad), S_D(vdivstep_rad), S_D(dispersion), S_D(dispstep),
    // crystal
    S_DN(a0, 3), S_DN(b0, 3), S_DN(c0, 3), S_DN(a_star, 3), S_DN(b_star, 3), S_DN(c_star, 3), S_DN(cell, 6),
    S_D(V_cell_A3), S_D(Na), S_D(Nb), S_D(Nc), S_E(xtal_shape), S_D(fudge), S_D(default_F),
    S_I(interpolate), S_D(dmin_m), S_D(water_m), S_D(I_bg),
    // spindle and mosaicity
    S_D(phi0_rad), S_D(osc_rad), S_D(phistep_rad), S_I(phisteps), S_D(mosaic_spread_rad), S_I(mosaic_domains),
    S_DN(misset_rad, 3),
    // sampling, noise, scaling
    S_L(steps), S_L(seed), S_D(adc_offset), S_D(intfile_scale), S_D(pgm_scale), S_I(warn_pix0_ignored),
};
#undef S_D
#undef S_DN
#undef S_I
#undef S_L
#undef S_E

py::object out_scalar(const OutField &f, const char *src) {
    switch (f.kind) {
    case Kind::Double: return py::float_(*reinterpret_cast<const double *>(src));
    case Kind::Int: return py::int_(*reinterpret_cast<const int *>(src));
    case Kind::Long: return py::int_(*reinterpret_cast<const long *>(src));
    case Kind::Enum: return py::str(enum_to_name(f.enum_param, *reinterpret_cast<const int *>(src)));
    }
    return py::none();
}

template <typename T>
py::array_t<T> copy_array(const T *src, std::vector<py::ssize_t> shape) {
    py::array_t<T> a(shape);
    size_t n = 1;
    for (auto d : shape) n *= (size_t)d;
    if (n) {
        if (src)
            std::memcpy(a.mutable_data(), src, n * sizeof(T));
        else
            std::memset(a.mutable_data(), 0, n * sizeof(T));
    }
    return a;
}

// ------------------------------------------------------------------ Hkl --

class Hkl {
  public:
    HklOwner own;

    static Hkl *from_text(const py::object &data, double default_F) {
        ByteView buf(data, "Hkl.from_text");
        auto h = std::make_unique<Hkl>();
        char err[kErrLen] = "";
        int rc;
        {
            py::gil_scoped_release nogil;
            rc = nb_hkl_parse_text(reinterpret_cast<const char *>(buf.data()), buf.size(), default_F, &h->own.g, err,
                                   sizeof err);
        }
        if (rc != NB_OK) raise_c_error("nb_hkl_parse_text", err, rc);
        return h.release();
    }

    static Hkl *from_fdump(const py::object &data) {
        ByteView buf(data, "Hkl.from_fdump");
        auto h = std::make_unique<Hkl>();
        char err[kErrLen] = "";
        int rc;
        {
            py::gil_scoped_release nogil;
            rc = nb_fdump_parse(buf.data(), buf.size(), &h->own.g, err, sizeof err);
        }
        if (rc != NB_OK) raise_c_error("nb_fdump_parse", err, rc);
        return h.release();
    }

    static Hkl *from_rows(py::array_t<double, py::array::c_style | py::array::forcecast> rows, double default_F) {
        if (!(rows.ndim() == 2 && rows.shape(1) == 4) && !(rows.ndim() == 1 && rows.shape(0) == 0))
            throw py::value_error("Hkl.from_rows: expected an array of shape (n, 4) (h k l F per row)");
        size_t n = rows.ndim() == 2 ? (size_t)rows.shape(0) : 0;
        auto h = std::make_unique<Hkl>();
        char err[kErrLen] = "";
        int rc = nb_hkl_from_rows(rows.data(), n, default_F, &h->own.g, err, sizeof err);
        if (rc != NB_OK) raise_c_error("nb_hkl_from_rows", err, rc);
        return h.release();
    }

    py::bytes fdump() const {
        // encoded straight into the bytes object: one copy of a grid that may be GBs
        size_t n = nb_fdump_size(&own.g);
        PyObject *out = PyBytes_FromStringAndSize(nullptr, (Py_ssize_t)n);
        if (!out) throw py::error_already_set();
        if (n) nb_fdump_encode(&own.g, reinterpret_cast<unsigned char *>(PyBytes_AS_STRING(out)));
        return py::reinterpret_steal<py::bytes>(out);
    }

    const nb_hkl *grid() const { return &own.g; }
};

// ---------------------------------------------------------------- Setup --

using FloatImage = py::array_t<float, py::array::c_style | py::array::forcecast>;

class Setup {
  public:
    explicit Setup(const py::dict &params) {
        nb_params p;
        nb_params_init(&p);

        // Pass 1: every field; giving cell/amat/misset_seed also sets its
        // has_* flag.  Pass 2: explicit has_* keys, so that they win
        // whatever the dict order.
        std::vector<std::pair<const nb_field *, py::handle>> flags;
        for (auto item : params) {
            if (!PyUnicode_Check(item.first.ptr()))
                throw py::type_error("parameter names must be str, got " + type_name(item.first));
            std::string key = py::cast<std::string>(item.first);
            if (key == "sources") {
                set_sources(p, item.second);
                continue;
            }
            const nb_field *f = nb_params_find(key.c_str());
            if (!f) {
                if (key == "n_sources")
                    throw py::type_error("unknown parameter 'n_sources' (it is set from 'sources')");
                throw py::type_error("unknown parameter '" + key + "'");
            }
            if (key.rfind("has_", 0) == 0) {
                flags.emplace_back(f, item.second);
                continue;
            }
            set_field(p, *f, item.second, key);
        }
        for (auto &fl : flags) set_field(p, *fl.first, fl.second, fl.first->name);

        char err[kErrLen] = "";
        int rc = nb_setup_init(&p, &own_.s, err, sizeof err);
        if (rc != NB_OK) raise_c_error("nb_setup_init", err, rc);
    }

    const nb_setup &s() const { return own_.s; }
    int fpixels() const { return own_.s.fpixels; }
    int spixels() const { return own_.s.spixels; }

    py::str log() const {
        const nb_setup &s = own_.s;
        return decode_text(s.log, s.log && s.log_len ? s.log_len : (size_t)-1);
    }

    py::dict geometry() const {
        const nb_setup &s = own_.s;
        py::dict d;
        const char *base = reinterpret_cast<const char *>(&s);
        for (const OutField &f : kSetupFields) {
            const char *src = base + f.offset;
            if (f.count == 1) {
                d[f.name] = out_scalar(f, src);
            } else {
                py::tuple t(f.count);
                for (int i = 0; i < f.count; i++) t[i] = out_scalar(f, src + i * elem_size(f.kind));
                d[f.name] = t;
            }
        }
        py::ssize_t ns = s.n_sources > 0 ? s.n_sources : 0;
        d["source_dir"] = copy_array<double>(s.source_dir, {ns, 3});
        d["source_weight"] = copy_array<double>(s.source_weight, {ns});
        d["source_lambda_m"] = copy_array<double>(s.source_lambda_m, {ns});
        py::ssize_t nd = s.mosaic_domains > 0 && s.mosaic_umats ? s.mosaic_domains : 0;
        d["mosaic_umats"] = copy_array<double>(s.mosaic_umats, {nd, 3, 3});
        return d;
    }

    py::tuple render(const Hkl *hkl, const py::object &mask_obj, int threads) const {
        const nb_setup &s = own_.s;
        const py::ssize_t H = s.spixels, W = s.fpixels;
        py::array_t<uint16_t, py::array::c_style | py::array::forcecast> mask;
        const uint16_t *mask_ptr = nullptr;
        if (!mask_obj.is_none()) {
            mask = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>::ensure(mask_obj);
            if (!mask) throw py::type_error("render: mask must be an array convertible to uint16");
            if (mask.ndim() != 2 || mask.shape(0) != H || mask.shape(1) != W)
                throw py::value_error("render: mask must have shape (" + std::to_string(H) + ", " + std::to_string(W) +
                                      ")");
            mask_ptr = mask.data();
        }
        py::array_t<float> image({H, W});
        if (H > 0 && W > 0) std::memset(image.mutable_data(), 0, sizeof(float) * (size_t)(H * W));
        float *img = image.mutable_data();
        nb_stats st;
        std::memset(&st, 0, sizeof st);
        char err[kErrLen] = "";
        const nb_hkl *grid = hkl ? hkl->grid() : nullptr;
        int rc;
        {
            py::gil_scoped_release nogil;
            rc = nb_render(&s, grid, mask_ptr, img, &st, threads, err, sizeof err);
        }
        if (rc != NB_OK) raise_c_error("nb_render", err, rc);

        py::dict stats;
        stats["max_I"] = st.max_I;
        stats["max_I_x_m"] = st.max_I_x_m;
        stats["max_I_y_m"] = st.max_I_y_m;
        stats["mean"] = st.mean;
        stats["rms"] = st.rms;
        stats["rmsd"] = st.rmsd;
        stats["omega_sum"] = st.omega_sum;
        stats["pixels_rendered"] = st.pixels_rendered;
        stats["interpolation_fell_back"] = py::bool_(st.interpolation_fell_back != 0);
        stats["fallback_pixel"] = st.fallback_pixel;
        stats["fallback_hkl"] = py::make_tuple(st.fallback_hkl[0], st.fallback_hkl[1], st.fallback_hkl[2]);
        stats["fallback_hkl0"] = py::make_tuple(st.fallback_hkl0[0], st.fallback_hkl0[1], st.fallback_hkl0[2]);
        stats["kernel_isa"] = st.kernel_isa;
        return py::make_tuple(image, stats);
    }

    py::tuple int_image(FloatImage image, double max_I) const {
        check_image(image, "int_image");
        py::array_t<uint16_t> out = zeros<uint16_t>();
        double scale = nb_int_image(&own_.s, image.data(), max_I, out.mutable_data());
        return py::make_tuple(out, scale);
    }

    py::tuple pgm_image(FloatImage image, double intfile_scale, double rmsd) const {
        check_image(image, "pgm_image");
        py::array_t<uint8_t> out = zeros<uint8_t>();
        double scale = nb_pgm_image(&own_.s, image.data(), intfile_scale, rmsd, out.mutable_data());
        return py::make_tuple(out, scale);
    }

    py::tuple noise_image(FloatImage image, const py::object &seed_obj) const {
        check_image(image, "noise_image");
        long seed = own_.s.seed;
        if (!seed_obj.is_none())
            seed = -(long)to_integer(seed_obj, "seed", -std::numeric_limits<long>::max(),
                                     std::numeric_limits<long>::max());
        py::array_t<uint16_t> out = zeros<uint16_t>();
        double photons = 0.0;
        long overloads = 0;
        nb_noise_image(&own_.s, image.data(), seed, out.mutable_data(), &photons, &overloads);
        return py::make_tuple(out, photons, overloads);
    }

    /* The header exactly as the reference writes it: 512 bytes, or longer
     * (unpadded) when its text does not fit, with the pixels right after. */
    py::bytes smv_header() const {
        char hdr[1024];
        size_t n = nb_smv_header_text(&own_.s, hdr, sizeof hdr);
        return py::bytes(hdr, n < sizeof hdr ? n : sizeof hdr);
    }

    py::bytes pgm_header(double scale) const {
        std::vector<char> buf(256, '\0');
        size_t n = nb_pgm_header(&own_.s, scale, buf.data(), buf.size());
        if (n >= buf.size()) {   // snprintf-style: the length it needed
            buf.assign(n + 1, '\0');
            n = nb_pgm_header(&own_.s, scale, buf.data(), buf.size());
            if (n >= buf.size()) n = buf.size() - 1;
        }
        return py::bytes(buf.data(), n);
    }

  private:
    SetupOwner own_;
    py::object sources_;   // keeps the (n,5) array nb_params.sources points into alive

    void set_sources(nb_params &p, const py::handle &value) {
        if (value.is_none()) {
            sources_ = py::none();
            p.sources = nullptr;
            p.n_sources = 0;
            return;
        }
        auto arr = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(value);
        if (!arr) {
            PyErr_Clear();
            bad_value("sources", "expected a float array of shape (n, 5), got " + type_name(value));
        }
        if (arr.ndim() == 1 && arr.shape(0) == 0) {
            sources_ = py::none();
            p.sources = nullptr;
            p.n_sources = 0;
            return;
        }
        if (arr.ndim() != 2 || arr.shape(1) != 5)
            bad_value("sources", "expected shape (n, 5) (X Y Z weight lambda_m per row)");
        if (arr.shape(0) > std::numeric_limits<int>::max()) bad_value("sources", "too many sources");
        sources_ = arr;
        p.sources = arr.data();
        p.n_sources = (int)arr.shape(0);
    }

    void check_image(const FloatImage &image, const char *what) const {
        const nb_setup &s = own_.s;
        if (image.ndim() != 2 || image.shape(0) != s.spixels || image.shape(1) != s.fpixels)
            throw py::value_error(std::string(what) + ": image must have shape (" + std::to_string(s.spixels) + ", " +
                                  std::to_string(s.fpixels) + ")");
    }

    template <typename T>
    py::array_t<T> zeros() const {
        const py::ssize_t H = own_.s.spixels, W = own_.s.fpixels;
        py::array_t<T> a({H, W});
        if (H > 0 && W > 0) std::memset(a.mutable_data(), 0, sizeof(T) * (size_t)(H * W));
        return a;
    }
};

// ------------------------------------------------------------------ Smv --


class Smv {
  public:
    SmvOwner own;
    py::object data;   // uint16 (height, width), copied once at parse time

    const nb_smv &v() const { return own.v; }
};

Smv *parse_smv(const py::object &obj) {
    ByteView buf(obj, "parse_smv");
    auto smv = std::make_unique<Smv>();
    char err[kErrLen] = "";
    int rc;
    {
        py::gil_scoped_release nogil;
        rc = nb_smv_parse(buf.data(), buf.size(), &smv->own.v, err, sizeof err);
    }
    if (rc != NB_OK) raise_c_error("nb_smv_parse", err, rc);
    const nb_smv &v = smv->own.v;
    py::ssize_t h = v.height > 0 ? v.height : 0, w = v.width > 0 ? v.width : 0;
    smv->data = copy_array<uint16_t>(v.data, {h, w});
    return smv.release();
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "nanobragg C engine (marshalling layer; see nanobragg.h)";
    m.attr("version") = NB_VERSION;

    py::class_<Hkl>(m, "Hkl", "Structure factors on a dense h,k,l grid")
        .def_static("from_text", &Hkl::from_text, py::arg("data"), py::arg("default_F"),
                    "Parse 'h k l F' text (bytes).")
        .def_static("from_fdump", &Hkl::from_fdump, py::arg("data"), "Parse the content of an Fdump.bin cache.")
        .def_static("from_rows", &Hkl::from_rows, py::arg("rows"), py::arg("default_F"),
                    "Build from a float64 array of shape (n, 4): h k l F.")
        .def("fdump", &Hkl::fdump, "The Fdump.bin content for this grid (bytes).")
        .def_property_readonly("h_min", [](const Hkl &h) { return h.grid()->h_min; })
        .def_property_readonly("h_max", [](const Hkl &h) { return h.grid()->h_max; })
        .def_property_readonly("k_min", [](const Hkl &h) { return h.grid()->k_min; })
        .def_property_readonly("k_max", [](const Hkl &h) { return h.grid()->k_max; })
        .def_property_readonly("l_min", [](const Hkl &h) { return h.grid()->l_min; })
        .def_property_readonly("l_max", [](const Hkl &h) { return h.grid()->l_max; })
        .def_property_readonly("count", [](const Hkl &h) { return h.grid()->count; })
        .def("__repr__", [](const Hkl &h) {
            const nb_hkl *g = h.grid();
            return "<nanobragg._core.Hkl count=" + std::to_string(g->count) + " h=" + std::to_string(g->h_min) + ".." +
                   std::to_string(g->h_max) + " k=" + std::to_string(g->k_min) + ".." + std::to_string(g->k_max) +
                   " l=" + std::to_string(g->l_min) + ".." + std::to_string(g->l_max) + ">";
        });

    py::class_<Setup>(m, "Setup", "A resolved simulation setup (nb_setup) built from a dict of nb_params fields")
        .def(py::init<const py::dict &>(), py::arg("params"))
        .def_property_readonly("log", &Setup::log)
        .def_property_readonly("warn_pix0_ignored", [](const Setup &s) { return s.s().warn_pix0_ignored != 0; })
        .def_property_readonly("fpixels", &Setup::fpixels)
        .def_property_readonly("spixels", &Setup::spixels)
        .def_property_readonly("steps", [](const Setup &s) { return s.s().steps; })
        .def_property_readonly("geometry", &Setup::geometry)
        .def("render", &Setup::render, py::arg("hkl") = py::none(), py::arg("mask") = py::none(),
             py::arg("threads") = 0, "Render the float image: returns (image float32 (spixels, fpixels), stats dict).")
        .def("int_image", &Setup::int_image, py::arg("image"), py::arg("max_I"))
        .def("pgm_image", &Setup::pgm_image, py::arg("image"), py::arg("intfile_scale"), py::arg("rmsd"))
        .def("noise_image", &Setup::noise_image, py::arg("image"), py::arg("seed") = py::none())
        .def("smv_header", &Setup::smv_header)
        .def("pgm_header", &Setup::pgm_header, py::arg("scale"));

    py::class_<Smv>(m, "Smv", "A parsed SMV image")
        .def_property_readonly("header", [](const Smv &s) { return decode_text(s.v().header); })
        .def_property_readonly("width", [](const Smv &s) { return s.v().width; })
        .def_property_readonly("height", [](const Smv &s) { return s.v().height; })
        .def_property_readonly("header_bytes", [](const Smv &s) { return s.v().header_bytes; })
        .def_property_readonly("data", [](const Smv &s) { return s.data; })
        .def(
            "value",
            [](const Smv &s, const std::string &keyword) -> py::object {
                double v = nb_smv_value(&s.v(), keyword.c_str());
                if (std::isnan(v)) return py::none();
                return py::float_(v);
            },
            py::arg("keyword"));

    m.def("parse_smv", &parse_smv, py::arg("data"), "Parse an SMV file's bytes.");
}
