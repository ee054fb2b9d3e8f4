// binding_companions.cpp - the companion programs' engine calls in nanobragg._core.
//
// Marshalling only: a dict of struct fields and buffers of float32 pixels
// (bytes, bytearray, NumPy arrays: anything with the buffer protocol, so the
// commands need no NumPy) in; bytes of pixels and dicts of figures out.  The
// GIL is released around the engine calls.

#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "nanobragg.h"

namespace py = pybind11;

namespace {

constexpr size_t kErrLen = 1024;

[[noreturn]] void raise_engine(const char *err, int rc) {
    std::string msg = err[0] ? std::string(err) : std::string("engine call failed");
    if (rc == NB_ENOMEM) {
        PyErr_SetString(PyExc_MemoryError, msg.c_str());
        throw py::error_already_set();
    }
    throw py::value_error(msg);
}

// n float32 values from a buffer, zero-padded (or cut) to n
std::vector<float> floats_from(const py::object &obj, size_t n) {
    if (PyUnicode_Check(obj.ptr())) throw py::type_error("expected a buffer of float32 values, got str");
    py::buffer buf = py::reinterpret_borrow<py::buffer>(obj);
    py::buffer_info info = buf.request();
    size_t bytes = (size_t)info.size * (size_t)info.itemsize;
    bool contiguous = true;
    if (info.ndim > 0) {
        py::ssize_t stride = info.itemsize;
        for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
            if (info.shape[d] > 1 && info.strides[d] != stride) contiguous = false;
            stride *= info.shape[d];
        }
    }
    if (!contiguous) throw py::value_error("expected a C-contiguous buffer");
    std::vector<float> out(n, 0.0f);
    size_t take = bytes < n * sizeof(float) ? bytes : n * sizeof(float);
    if (take) std::memcpy(out.data(), info.ptr, take);
    return out;
}

template <class T> T get(const py::dict &d, const char *key, T dflt) {
    if (!d.contains(key)) return dflt;
    return d[key].cast<T>();
}

py::bytes as_bytes(const void *p, size_t n) { return py::bytes(static_cast<const char *>(p), n); }

py::dict psf_info(const nb_psf_info &i) {
    py::dict d;
    d["max_photons"] = i.max_photons;
    d["auto_radius"] = i.auto_radius;
    d["radius"] = i.radius;
    d["skipped"] = i.skipped != 0;
    d["lost_photons"] = i.lost_photons;
    return d;
}

py::dict noisify(const py::object &image, const py::dict &kw, bool want_pgm, int nthreads) {
    nb_noisify_params p;
    nb_noisify_params_init(&p);
    p.width = get<int>(kw, "width", 0);
    p.height = get<int>(kw, "height", 0);
    p.fluence_re2 = get<double>(kw, "fluence_re2", p.fluence_re2);
    p.scale = get<double>(kw, "scale", p.scale);
    p.gain = get<double>(kw, "gain", p.gain);
    p.adc_offset = get<double>(kw, "adc_offset", p.adc_offset);
    p.readout = get<double>(kw, "readout", p.readout);
    p.flicker = get<double>(kw, "flicker", p.flicker);
    p.calibration = get<double>(kw, "calibration", p.calibration);
    p.seed = get<long>(kw, "seed", p.seed);
    p.calib_seed = get<long>(kw, "calib_seed", p.calib_seed);
    p.psf = (nb_psf_kind)get<int>(kw, "psf", (int)p.psf);
    p.psf_fwhm_px = get<double>(kw, "psf_fwhm_px", p.psf_fwhm_px);
    p.psf_radius = get<int>(kw, "psf_radius", p.psf_radius);
    p.bits = get<int>(kw, "bits", p.bits);
    p.noise = get<bool>(kw, "noise", p.noise != 0) ? 1 : 0;
    if (p.width <= 0 || p.height <= 0) throw py::value_error("noisify: width and height must be positive");
    if (p.psf != NB_PSF_NONE && p.psf != NB_PSF_GAUSS && p.psf != NB_PSF_FIBER)
        throw py::value_error("noisify: unknown PSF kind");
    size_t pixels = (size_t)p.width * (size_t)p.height;
    std::vector<float> in = floats_from(image, pixels);
    size_t px_bytes = p.bits == 32 ? 4 : 2;
    std::vector<unsigned char> ints(pixels * px_bytes), noise(p.noise ? pixels * px_bytes : 0),
        pgm(want_pgm ? pixels : 0);
    nb_noisify_stats st;
    char err[kErrLen] = "";
    int rc;
    {
        py::gil_scoped_release nogil;
        rc = nb_noisify(&p, in.data(), ints.data(), want_pgm ? pgm.data() : nullptr,
                        p.noise ? noise.data() : nullptr, &st, nthreads, err, sizeof err);
    }
    if (rc != NB_OK) raise_engine(err, rc);
    py::dict out;
    out["int_image"] = as_bytes(ints.data(), ints.size());
    out["pgm"] = want_pgm ? py::object(as_bytes(pgm.data(), pgm.size())) : py::object(py::none());
    out["noise_image"] = p.noise ? py::object(as_bytes(noise.data(), noise.size())) : py::object(py::none());
    out["max_input"] = st.max_input;
    out["negative_pixels"] = st.negative_pixels;
    out["photons_before_psf"] = st.photons_before_psf;
    out["photons"] = st.photons;
    out["overloads"] = st.overloads;
    out["psf_applied"] = st.psf_applied != 0;
    out["psf"] = psf_info(st.psf);
    return out;
}

py::bytes smv_header_fields(const std::string &type, const py::list &fields) {
    std::vector<nb_smv_field> f;
    std::vector<std::string> keys;
    keys.reserve(fields.size());
    for (auto item : fields) {
        py::tuple t = item.cast<py::tuple>();
        if (t.size() != 3) throw py::value_error("header fields are (key, value, integer) tuples");
        keys.push_back(t[0].cast<std::string>());
    }
    size_t k = 0;
    for (auto item : fields) {
        py::tuple t = item.cast<py::tuple>();
        f.push_back(nb_smv_field{keys[k++].c_str(), t[1].cast<double>(), t[2].cast<bool>() ? 1 : 0});
    }
    std::vector<char> out(8192);
    size_t n = nb_smv_header_fields(type.c_str(), f.data(), (int)f.size(), out.data(), out.size());
    return py::bytes(out.data(), n < out.size() ? n : out.size());
}

py::bytes pgm_header(int width, int height, double scale) {
    char buf[256];
    size_t n = nb_pgm_header_size(width, height, scale, buf, sizeof buf);
    return py::bytes(buf, n);
}

}  // namespace

void bind_companions(py::module_ &m) {
    m.def("noisify", &noisify, py::arg("image"), py::arg("params"), py::arg("pgm") = true, py::arg("nthreads") = 0,
          "Detector response (nb_noisify): float32 photons in; int/noise pixels (bytes) and figures out.");
    m.def("smv_header_fields", &smv_header_fields, py::arg("type"), py::arg("fields"),
          "An SMV header from (key, value, integer) fields (nb_smv_header_fields).");
    m.def("pgm_header", &pgm_header, py::arg("width"), py::arg("height"), py::arg("scale"),
          "The P5 header with its '# pixels scaled by' comment.");
}
