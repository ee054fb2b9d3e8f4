// binding.cpp - the nanobragg._core extension module.
//
// Marshalling only: Python dicts, bytes and buffers <-> the C structs of
// nanobragg.h.  Images cross as `Buffer` objects (the buffer protocol, so
// numpy.asarray() views them without a copy, and the nanoBragg command can
// write them without importing NumPy); image inputs are any C-contiguous
// buffer of the right type and size.  Every C allocation is owned by an RAII
// wrapper so that it is freed whatever path is taken; every non-zero C
// return becomes ValueError(<the C message>) (MemoryError for NB_ENOMEM).
// The GIL is released around nb_render and the parsers of large inputs; the
// render's poll callback takes it back to run Python's signal handlers, so
// Ctrl-C (or any handler that raises) stops a render promptly.

#include <pybind11/pybind11.h>

#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <cstdlib>
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

// --------------------------------------------------------------- Buffer --

// An owned, C-contiguous N-d array of one scalar type, exposed through the
// buffer protocol.
struct Buffer {
    // calloc'd: a large one is fresh zero pages from the kernel, touched
    // first by the engine's threads rather than by a serial zero-fill
    std::unique_ptr<unsigned char, void (*)(void *)> mem{nullptr, std::free};
    size_t nbytes = 0;
    std::string format;           // struct-module code: "f", "d", "H", "B"
    size_t itemsize = 0;
    std::vector<py::ssize_t> shape;

    Buffer(const std::string &fmt, size_t item, std::vector<py::ssize_t> shp) : format(fmt), itemsize(item), shape(std::move(shp)) {
        size_t n = 1;
        for (auto d : shape) n *= (size_t)(d > 0 ? d : 0);
        nbytes = n * itemsize;
        mem.reset(static_cast<unsigned char *>(std::calloc(nbytes ? nbytes : 1, 1)));
        if (!mem) throw std::bad_alloc();
    }
    template <typename T> T *data() { return reinterpret_cast<T *>(mem.get()); }
    py::buffer_info info() {
        std::vector<py::ssize_t> strides(shape.size());
        py::ssize_t st = (py::ssize_t)itemsize;
        for (size_t i = shape.size(); i-- > 0;) {
            strides[i] = st;
            st *= shape[i];
        }
        return py::buffer_info(mem.get(), (py::ssize_t)itemsize, format, (py::ssize_t)shape.size(), shape, strides);
    }
};

template <typename T> const char *format_of();
template <> const char *format_of<float>() { return "f"; }
template <> const char *format_of<double>() { return "d"; }
template <> const char *format_of<uint16_t>() { return "H"; }
template <> const char *format_of<uint8_t>() { return "B"; }

template <typename T> std::unique_ptr<Buffer> make_buffer(std::vector<py::ssize_t> shape) {
    return std::make_unique<Buffer>(format_of<T>(), sizeof(T), std::move(shape));
}

template <typename T> py::object copy_buffer(const T *src, std::vector<py::ssize_t> shape) {
    auto b = make_buffer<T>(std::move(shape));
    if (src && b->nbytes) std::memcpy(b->mem.get(), src, b->nbytes);
    return py::cast(b.release(), py::return_value_policy::take_ownership);
}

// A read-only view of a C-contiguous buffer of T with exactly n elements.
template <typename T> class TypedView {
  public:
    TypedView(const py::handle &obj, size_t n, const std::string &what) {
        if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
            PyErr_Clear();
            throw py::type_error(what + ": expected a C-contiguous array of " + format_name() + ", got " +
                                 std::string(py::str(py::type::of(obj).attr("__name__"))));
        }
        held_ = true;
        std::string fmt = view_.format ? view_.format : "B";
        if (!fmt.empty() && (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@')) fmt = fmt.substr(1);
        if (view_.itemsize != (py::ssize_t)sizeof(T) || !format_matches(fmt))
            throw py::type_error(what + ": expected " + format_name() + " elements, got format '" + fmt + "'");
        if ((size_t)(view_.len / view_.itemsize) != n)
            throw py::value_error(what + ": expected " + std::to_string(n) + " elements, got " +
                                  std::to_string(view_.len / view_.itemsize));
    }
    ~TypedView() {
        if (held_) PyBuffer_Release(&view_);
    }
    TypedView(const TypedView &) = delete;
    TypedView &operator=(const TypedView &) = delete;
    const T *data() const { return static_cast<const T *>(view_.buf); }

  private:
    Py_buffer view_{};
    bool held_ = false;
    static bool format_matches(const std::string &f) {
        const std::string want = format_of<T>();
        if (f == want) return true;
        // unsigned 16-bit may be spelled by its C name on some platforms
        return want == "H" && f == "u2";
    }
    static std::string format_name() { return std::string("'") + format_of<T>() + "'"; }
};

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

    // rows: a C-contiguous float64 buffer of n rows of h k l F
    static Hkl *from_rows(const py::buffer &rows, size_t n, double default_F) {
        TypedView<double> view(rows, n * 4, "Hkl.from_rows");
        auto h = std::make_unique<Hkl>();
        char err[kErrLen] = "";
        int rc = nb_hkl_from_rows(view.data(), n, default_F, &h->own.g, err, sizeof err);
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

// The render's poll callback: run Python's signal handlers (and an optional
// progress callable) with the GIL; an exception from either cancels the
// render and is re-raised once it has stopped.
struct PollState {
    PyThreadState *saved = nullptr;   // the released thread state of the caller
    py::object progress;              // None or callable(done, total)
    PyObject *exc_type = nullptr, *exc_value = nullptr, *exc_tb = nullptr;
};

extern "C" int poll_python(void *ctx, long done, long total) {
    auto *ps = static_cast<PollState *>(ctx);
    PyEval_RestoreThread(ps->saved);
    int cancel = 0;
    if (PyErr_CheckSignals() != 0) {
        cancel = 1;
    } else if (!ps->progress.is_none()) {
        PyObject *r = PyObject_CallFunction(ps->progress.ptr(), "ll", done, total);
        if (r)
            Py_DECREF(r);
        else
            cancel = 1;
    }
    if (cancel) PyErr_Fetch(&ps->exc_type, &ps->exc_value, &ps->exc_tb);
    ps->saved = PyEval_SaveThread();
    return cancel;
}

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
        d["source_dir"] = copy_buffer<double>(s.source_dir, {ns, 3});
        d["source_weight"] = copy_buffer<double>(s.source_weight, {ns});
        d["source_lambda_m"] = copy_buffer<double>(s.source_lambda_m, {ns});
        py::ssize_t nd = s.mosaic_domains > 0 && s.mosaic_umats ? s.mosaic_domains : 0;
        d["mosaic_umats"] = copy_buffer<double>(s.mosaic_umats, {nd, 3, 3});
        return d;
    }

    py::tuple render(const Hkl *hkl, const py::object &mask_obj, int threads, bool exact_threads,
                     const py::object &progress, bool noise, bool skip_negligible) const {
        const nb_setup &s = own_.s;
        const py::ssize_t H = s.spixels, W = s.fpixels;
        std::unique_ptr<TypedView<uint16_t>> mask;
        if (!mask_obj.is_none()) mask = std::make_unique<TypedView<uint16_t>>(mask_obj, (size_t)(H * W), "render: mask");
        auto image = make_buffer<float>({H, W});
        nb_stats st;
        std::memset(&st, 0, sizeof st);
        char err[kErrLen] = "";
        const nb_hkl *grid = hkl ? hkl->grid() : nullptr;
        PollState ps;
        ps.progress = progress;
        // the noise image at the run's seed, drawn while the image renders
        std::unique_ptr<Buffer> noise_img;
        std::unique_ptr<nb_noise_stream, void (*)(nb_noise_stream *)> stream(
            nullptr, [](nb_noise_stream *ns) { nb_noise_stream_finish(ns, nullptr, nullptr); });
        if (noise) {
            noise_img = make_buffer<uint16_t>({H, W});
            stream.reset(nb_noise_stream_new(&s, s.seed, noise_img->data<uint16_t>()));
            if (!stream) throw std::bad_alloc();
        }
        nb_render_opts opts = {threads, exact_threads ? 1 : 0, poll_python, &ps, stream.get(), skip_negligible ? 1 : 0};
        double photons = 0.0;
        long overloads = 0;
        ps.saved = PyEval_SaveThread();
        int rc = nb_render(&s, grid, mask ? mask->data() : nullptr, image->data<float>(), &st, &opts, err, sizeof err);
        if (rc == NB_OK && stream) {
            nb_noise_stream_draw(stream.get(), image->data<float>(), (int)H);
            nb_noise_stream_finish(stream.release(), &photons, &overloads);
        }
        PyEval_RestoreThread(ps.saved);
        if (rc == NB_ECANCELLED && ps.exc_type) {
            PyErr_Restore(ps.exc_type, ps.exc_value, ps.exc_tb);
            throw py::error_already_set();
        }
        if (rc != NB_OK) raise_c_error("nb_render", err, rc);
        py::dict stats;
        stats["max_I"] = st.max_I;
        stats["max_I_x_m"] = st.max_I_x_m;
        stats["max_I_y_m"] = st.max_I_y_m;
        stats["min_I"] = st.min_I;
        stats["mean"] = st.mean;
        stats["rms"] = st.rms;
        stats["rmsd"] = st.rmsd;
        stats["omega_sum"] = st.omega_sum;
        stats["pixels_rendered"] = st.pixels_rendered;
        stats["nonfinite_pixels"] = st.nonfinite_pixels;
        stats["interpolation_fell_back"] = py::bool_(st.interpolation_fell_back != 0);
        stats["fallback_pixel"] = st.fallback_pixel;
        stats["fallback_hkl"] = py::make_tuple(st.fallback_hkl[0], st.fallback_hkl[1], st.fallback_hkl[2]);
        stats["fallback_hkl0"] = py::make_tuple(st.fallback_hkl0[0], st.fallback_hkl0[1], st.fallback_hkl0[2]);
        stats["kernel_isa"] = st.kernel_isa;
        stats["pixels_skipped"] = st.pixels_skipped;
        py::object noise_out = py::none();
        if (noise_img)
            noise_out = py::make_tuple(py::cast(noise_img.release(), py::return_value_policy::take_ownership),
                                       photons, overloads);
        return py::make_tuple(py::cast(image.release(), py::return_value_policy::take_ownership), stats, noise_out);
    }
    py::tuple int_image(const py::object &image, double max_I) const {
        TypedView<float> in(image, pixels(), "int_image: image");
        auto out = make_buffer<uint16_t>(shape());
        double scale;
        {
            py::gil_scoped_release nogil;
            scale = nb_int_image(&own_.s, in.data(), max_I, out->data<uint16_t>());
        }
        return py::make_tuple(py::cast(out.release(), py::return_value_policy::take_ownership), scale);
    }
    py::tuple pgm_image(const py::object &image, double intfile_scale, double rmsd) const {
        TypedView<float> in(image, pixels(), "pgm_image: image");
        auto out = make_buffer<uint8_t>(shape());
        double scale;
        {
            py::gil_scoped_release nogil;
            scale = nb_pgm_image(&own_.s, in.data(), intfile_scale, rmsd, out->data<uint8_t>());
        }
        return py::make_tuple(py::cast(out.release(), py::return_value_policy::take_ownership), scale);
    }
    py::tuple noise_image(const py::object &image, const py::object &seed_obj) const {
        TypedView<float> in(image, pixels(), "noise_image: image");
        long seed = own_.s.seed;
        if (!seed_obj.is_none())
            seed = -(long)to_integer(seed_obj, "seed", -std::numeric_limits<long>::max(),
                                     std::numeric_limits<long>::max());
        auto out = make_buffer<uint16_t>(shape());
        double photons = 0.0;
        long overloads = 0;
        int rc;
        {
            py::gil_scoped_release nogil;
            rc = nb_noise_image(&own_.s, in.data(), seed, out->data<uint16_t>(), &photons, &overloads);
        }
        if (rc != NB_OK) throw std::bad_alloc();
        return py::make_tuple(py::cast(out.release(), py::return_value_policy::take_ownership), photons, overloads);
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
    std::vector<double> sources_;   // the rows nb_params.sources points into

    // rows of X Y Z weight lambda_m (NaN: the default), from a float64 buffer
    // of shape (n, 5) or any sequence of 5-number sequences
    void set_sources(nb_params &p, const py::handle &value) {
        sources_.clear();
        p.sources = nullptr;
        p.n_sources = 0;
        if (value.is_none()) return;
        if (PyObject_CheckBuffer(value.ptr())) {
            py::buffer_info bi = py::reinterpret_borrow<py::buffer>(value).request();
            if (bi.format != "d" || bi.itemsize != sizeof(double))
                bad_value("sources", "expected float64 values, got format '" + bi.format + "'");
            if (bi.size == 0) return;
            if (bi.ndim != 2 || bi.shape[1] != 5 || bi.strides[1] != (py::ssize_t)sizeof(double) ||
                bi.strides[0] != 5 * (py::ssize_t)sizeof(double))
                bad_value("sources", "expected a C-contiguous array of shape (n, 5) (X Y Z weight lambda_m per row)");
            const double *d = static_cast<const double *>(bi.ptr);
            sources_.assign(d, d + bi.size);
        } else {
            if (PyUnicode_Check(value.ptr()) || !PySequence_Check(value.ptr()))
                bad_value("sources", "expected rows of 5 numbers (X Y Z weight lambda_m), got " + type_name(value));
            auto rows = py::reinterpret_borrow<py::sequence>(value);
            for (auto row : rows) {
                if (PyUnicode_Check(row.ptr()) || !PySequence_Check(row.ptr()) || py::len(row) != 5)
                    bad_value("sources", "every row needs 5 numbers (X Y Z weight lambda_m)");
                for (auto x : py::reinterpret_borrow<py::sequence>(row)) sources_.push_back(to_double(x, "sources"));
            }
        }
        if (sources_.size() / 5 > (size_t)std::numeric_limits<int>::max()) bad_value("sources", "too many sources");
        p.sources = sources_.data();
        p.n_sources = (int)(sources_.size() / 5);
    }
    size_t pixels() const { return (size_t)own_.s.spixels * (size_t)own_.s.fpixels; }
    std::vector<py::ssize_t> shape() const { return {own_.s.spixels, own_.s.fpixels}; }
};

// The reference's -printout values, pixel by pixel in raster order.  Holds
// the last pixel's record, so that calls for successive runs of pixels
// carry the values a pixel leaves to the next (nb_trace_pixels' carry).
class Tracer {
  public:
    Tracer(py::object setup, py::object hkl, py::object mask, long fallback_pixel)
        : setup_(std::move(setup)), hkl_(std::move(hkl)), mask_obj_(std::move(mask)), fallback_(fallback_pixel) {
        const Setup &st = setup_.cast<const Setup &>();
        if (!mask_obj_.is_none())
            mask_ = std::make_unique<TypedView<uint16_t>>(mask_obj_, (size_t)st.s().fpixels * st.s().spixels,
                                                          "tracer: mask");
        std::memset(&carry_, 0, sizeof carry_);
        carry_.pixel = -1;
    }
    // the rendered pixels of raster indices first..end-1, after those of the previous call
    py::list trace(long first, long end) {
        const nb_setup &s = setup_.cast<const Setup &>().s();
        const Hkl *hkl = hkl_.is_none() ? nullptr : hkl_.cast<const Hkl *>();
        // room for the range's pixels; a range off the image is the engine's error
        const long total = (long)s.fpixels * s.spixels;
        const long lo = first < 0 ? 0 : first, hi = end > total ? total : end;
        std::vector<nb_pixel_trace> out(hi > lo ? (size_t)(hi - lo) : 0);
        char err[kErrLen] = "";
        int rc, n = 0;
        {
            py::gil_scoped_release nogil;
            rc = nb_trace_pixels(&s, hkl ? hkl->grid() : nullptr, mask_ ? mask_->data() : nullptr, fallback_, first,
                                 end, out.data(), &n, &carry_, err, sizeof err);
        }
        if (rc != NB_OK) raise_c_error("nb_trace_pixels", err, rc);
        out.resize((size_t)n);
        auto v3 = [](const double *v) { return py::make_tuple(v[0], v[1], v[2]); };
        py::list rows;
        for (const nb_pixel_trace &t : out) {
            py::dict d;
            d["pixel"] = t.pixel;
            d["stol_per_m"] = t.stol_per_m;
            d["pixel_pos_m"] = v3(t.pixel_pos_m);
            d["hkl"] = v3(t.hkl);
            d["hkl0"] = py::make_tuple(t.hkl0[0], t.hkl0[1], t.hkl0[2]);
            d["F_cell"] = t.F_cell;
            d["F_latt"] = t.F_latt;
            d["I"] = t.I;
            d["polar"] = t.polar;
            d["omega_sr"] = t.omega_sr;
            d["capture_fraction"] = t.capture_fraction;
            d["a_m"] = v3(t.a_m);
            d["b_m"] = v3(t.b_m);
            d["c_m"] = v3(t.c_m);
            rows.append(d);
        }
        return rows;
    }

  private:
    py::object setup_, hkl_, mask_obj_;
    std::unique_ptr<TypedView<uint16_t>> mask_;
    long fallback_;
    nb_pixel_trace carry_;
};

// ------------------------------------------------------------------ Smv --


class Smv {
  public:
    SmvOwner own;
    py::object data;   // Buffer uint16 (height, width), copied once at parse time

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
    smv->data = copy_buffer<uint16_t>(v.data, {h, w});
    return smv.release();
}

}  // namespace

void bind_companions(py::module_ &m);  // binding_companions.cpp

PYBIND11_MODULE(_core, m) {
    bind_companions(m);
    m.doc() = "nanobragg C engine (marshalling layer; see nanobragg.h)";
    m.attr("version") = NB_VERSION;

    py::class_<Buffer>(m, "Buffer", py::buffer_protocol(),
                       "An engine-owned C-contiguous array (buffer protocol: numpy.asarray() views it)")
        .def_buffer([](Buffer &b) { return b.info(); })
        .def_property_readonly("shape", [](const Buffer &b) {
            py::tuple t(b.shape.size());
            for (size_t i = 0; i < b.shape.size(); i++) t[i] = b.shape[i];
            return t;
        })
        .def("__len__", [](const Buffer &b) { return b.shape.empty() ? (py::ssize_t)0 : b.shape[0]; })
        .def_property_readonly("format", [](const Buffer &b) { return b.format; })
        .def_property_readonly("nbytes", [](const Buffer &b) { return b.nbytes; });

    py::class_<Hkl>(m, "Hkl", "Structure factors on a dense h,k,l grid")
        .def_static("from_text", &Hkl::from_text, py::arg("data"), py::arg("default_F"),
                    "Parse 'h k l F' text (bytes).")
        .def_static("from_fdump", &Hkl::from_fdump, py::arg("data"), "Parse the content of an Fdump.bin cache.")
        .def_static("from_rows", &Hkl::from_rows, py::arg("rows"), py::arg("n"), py::arg("default_F"),
                    "Build from a C-contiguous float64 buffer of n rows of h k l F.")
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
             py::arg("threads") = 0, py::arg("exact_threads") = false, py::arg("progress") = py::none(),
             py::arg("noise") = false, py::arg("skip_negligible") = false,
             "Render the float image: returns (Buffer float32 (spixels, fpixels), stats dict, noise), noise "
             "being noise_image(image) drawn during the render when noise=True, else None.  skip_negligible: "
             "skip the pixels whose lattice sum provably stays below NB_SKIP_FRACTION of the peak "
             "(docs/skipping.md; ignored with noise=True).  Python signal "
             "handlers run during the render; an exception from one (KeyboardInterrupt) or from "
             "progress(done, total) stops it and propagates.")
        .def("tracer", [](py::object self, py::object hkl, py::object mask, long fallback_pixel) {
                 return Tracer(std::move(self), std::move(hkl), std::move(mask), fallback_pixel);
             }, py::arg("hkl"), py::arg("mask"), py::arg("fallback_pixel"),
             "A Tracer of the reference's -printout values, after a render whose stats gave fallback_pixel.")
        .def("int_image", &Setup::int_image, py::arg("image"), py::arg("max_I"))
        .def("pgm_image", &Setup::pgm_image, py::arg("image"), py::arg("intfile_scale"), py::arg("rmsd"))
        .def("noise_image", &Setup::noise_image, py::arg("image"), py::arg("seed") = py::none())
        .def("smv_header", &Setup::smv_header)
        .def("pgm_header", &Setup::pgm_header, py::arg("scale"));

    py::class_<Tracer>(m, "Tracer", "The reference's -printout values, pixel by pixel in raster order")
        .def("trace", &Tracer::trace, py::arg("first"), py::arg("end"),
             "Records of the rendered pixels (inside the ROI, not masked) of raster indices first..end-1, "
             "after those of the previous call: a dict per pixel (nb_pixel_trace's fields, SI units).");

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
