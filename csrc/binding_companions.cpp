// binding_companions.cpp - the companion programs' engine calls in nanobragg._core.
//
// Marshalling only: a dict of struct fields and buffers of float32 pixels
// (bytes, bytearray, NumPy arrays: anything with the buffer protocol, so the
// commands need no NumPy) in; bytes of pixels and dicts of figures out.  The
// GIL is released around the engine calls.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

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


void get_vec3(const py::dict &d, const char *key, double *out) {
    if (!d.contains(key)) return;
    py::sequence v = d[key].cast<py::sequence>();
    if (v.size() != 3) throw py::value_error(std::string(key) + ": expected 3 numbers");
    for (size_t i = 0; i < 3; i++) out[i] = v[i].cast<double>();
}

// float64 values of a buffer (n x cols rows)
std::vector<double> doubles_from(const py::object &obj) {
    py::buffer buf = py::reinterpret_borrow<py::buffer>(obj);
    py::buffer_info info = buf.request();
    if (info.itemsize != 8 || info.format != py::format_descriptor<double>::format())
        throw py::value_error("expected a buffer of float64 values");
    std::vector<double> out((size_t)info.size);
    if (info.size) std::memcpy(out.data(), info.ptr, (size_t)info.size * 8);
    return out;
}

struct AmorphousOwner {
    nb_amorphous a;
    AmorphousOwner() { std::memset(&a, 0, sizeof a); }
    ~AmorphousOwner() { nb_amorphous_free(&a); }
};

py::dict amorphous(const py::dict &kw, const py::object &table, const py::object &sources, bool want_pgm,
                   bool want_noise, long seed, int nthreads) {
    nb_amorphous_params p;
    nb_amorphous_params_init(&p);
    p.fpixels = get<int>(kw, "fpixels", 0);
    p.spixels = get<int>(kw, "spixels", 0);
#define D(name) p.name = get<double>(kw, #name, p.name)
#define I(name) p.name = get<int>(kw, #name, p.name)
    D(pixel_m); D(detsize_f_m); D(detsize_s_m); D(distance_m); D(close_distance_m);
    D(Xbeam_m); D(Ybeam_m); D(Xclose_m); D(Yclose_m); D(twotheta_rad); D(polarization);
    D(lambda0_m); D(dispersion); D(hdivrange_rad); D(vdivrange_rad); D(hdivstep_rad); D(vdivstep_rad);
    D(source_distance_m); D(fluence); D(flux); D(exposure_s); D(beamsize_m);
    D(density_g_m3); D(molecular_weight); D(molecules); D(table_x_to_stol);
    D(adc_offset); D(intfile_scale); D(pgm_scale);
    I(curved_det); I(point_pixel); I(nopolar); I(fmap); I(oversample); I(dispsteps); I(hdivsteps);
    I(vdivsteps); I(round_div);
#undef D
#undef I
    p.pivot = get<int>(kw, "pivot", (int)p.pivot) ? NB_PIVOT_SAMPLE : NB_PIVOT_BEAM;
    get_vec3(kw, "fdet", p.fdet); get_vec3(kw, "sdet", p.sdet); get_vec3(kw, "beam", p.beam);
    get_vec3(kw, "polar_vec", p.polar_vec); get_vec3(kw, "twotheta_axis", p.twotheta_axis);
    get_vec3(kw, "rot_rad", p.rot_rad); get_vec3(kw, "sample_m", p.sample_m);
    if (kw.contains("roi")) {
        py::sequence r = kw["roi"].cast<py::sequence>();
        if (r.size() != 4) throw py::value_error("roi: expected 4 integers");
        for (size_t i = 0; i < 4; i++) p.roi[i] = r[i].cast<int>();
    }
    std::vector<double> tab = doubles_from(table), src;
    if (tab.size() % 2) throw py::value_error("the F table has rows of 2 numbers");
    p.table = tab.data();
    p.n_table = (int)(tab.size() / 2);
    if (!sources.is_none()) {
        src = doubles_from(sources);
        if (src.size() % 5) throw py::value_error("sources have rows of 5 numbers");
        p.sources = src.data();
        p.n_sources = (int)(src.size() / 5);
    }
    AmorphousOwner own;
    char err[kErrLen] = "";
    int rc;
    {
        py::gil_scoped_release nogil;
        rc = nb_amorphous_init(&p, &own.a, err, sizeof err);
    }
    if (rc != NB_OK) raise_engine(err, rc);
    const nb_setup &d = own.a.det;
    size_t pixels = (size_t)d.fpixels * (size_t)d.spixels;
    std::vector<float> image(pixels);
    std::vector<uint16_t> ints(pixels), noise(want_noise ? pixels : 0);
    std::vector<unsigned char> pgm(want_pgm ? pixels : 0);
    nb_amorphous_stats st;
    double int_scale = 0, pgm_scale = 0, photons = 0;
    long overloads = 0;
    {
        py::gil_scoped_release nogil;
        /* the noise is drawn while the image renders */
        nb_noise_stream *ns = want_noise ? nb_noise_stream_new(&d, seed, noise.data()) : NULL;
        if (want_noise && !ns) {
            rc = NB_ENOMEM;
            snprintf(err, sizeof err, "out of memory for the noise image");
        } else {
            rc = nb_amorphous_render(&own.a, image.data(), &st, nthreads, ns, err, sizeof err);
        }
        if (rc == NB_OK) {
            if (ns) nb_noise_stream_draw(ns, image.data(), d.spixels);
            int_scale = nb_int_image(&d, image.data(), st.max_I, ints.data());
            if (want_pgm) pgm_scale = nb_pgm_image(&d, image.data(), int_scale, st.rmsd, pgm.data());
        }
        nb_noise_stream_finish(ns, &photons, &overloads);
    }
    if (rc != NB_OK) raise_engine(err, rc);
    py::dict out;
    out["float_image"] = as_bytes(image.data(), pixels * sizeof(float));
    out["int_image"] = as_bytes(ints.data(), pixels * 2);
    out["pgm"] = want_pgm ? py::object(as_bytes(pgm.data(), pixels)) : py::object(py::none());
    out["noise_image"] = want_noise ? py::object(as_bytes(noise.data(), pixels * 2)) : py::object(py::none());
    out["intfile_scale"] = int_scale;
    out["pgm_scale"] = pgm_scale;
    out["photons"] = photons;
    out["overloads"] = overloads;
    py::dict stats;
    stats["max_I"] = st.max_I; stats["max_I_x"] = st.max_I_x_m; stats["max_I_y"] = st.max_I_y_m;
    stats["mean"] = st.mean; stats["rms"] = st.rms; stats["rmsd"] = st.rmsd; stats["omega_sum"] = st.omega_sum;
    stats["n"] = st.n;
    out["stats"] = stats;
    py::dict g;
    g["fpixels"] = d.fpixels; g["spixels"] = d.spixels; g["pixel_m"] = d.pixel_m;
    g["detsize_f_m"] = d.detsize_f_m; g["detsize_s_m"] = d.detsize_s_m;
    g["distance_m"] = d.distance_m; g["close_distance_m"] = d.close_distance_m;
    g["Xbeam_m"] = d.Xbeam_m; g["Ybeam_m"] = d.Ybeam_m; g["Xclose_m"] = d.Xclose_m; g["Yclose_m"] = d.Yclose_m;
    g["ORGX_px"] = d.ORGX_px; g["ORGY_px"] = d.ORGY_px; g["lambda0_m"] = d.lambda0_m;
    g["twotheta_rad"] = d.twotheta_rad; g["fluence"] = d.fluence; g["n_sources"] = d.n_sources;
    g["oversample"] = d.oversample; g["molecules"] = own.a.molecules; g["density_g_m3"] = own.a.density_g_m3;
    g["sample_m"] = py::make_tuple(own.a.sample_m[0], own.a.sample_m[1], own.a.sample_m[2]);
    g["clipped"] = py::make_tuple(own.a.clipped[0], own.a.clipped[1]);
    g["pix0_m"] = py::make_tuple(d.pix0_m[0], d.pix0_m[1], d.pix0_m[2]);
    g["fdet"] = py::make_tuple(d.fdet[0], d.fdet[1], d.fdet[2]);
    g["sdet"] = py::make_tuple(d.sdet[0], d.sdet[1], d.sdet[2]);
    g["roi"] = py::make_tuple(d.roi_xmin, d.roi_xmax, d.roi_ymin, d.roi_ymax);
    g["beam"] = py::make_tuple(d.beam[0], d.beam[1], d.beam[2]);
    g["polar_vec"] = py::make_tuple(d.polar_vec[0], d.polar_vec[1], d.polar_vec[2]);
    g["hdivrange_rad"] = d.hdivrange_rad; g["hdivstep_rad"] = d.hdivstep_rad;
    g["vdivrange_rad"] = d.vdivrange_rad; g["vdivstep_rad"] = d.vdivstep_rad;
    g["divsteps"] = d.divsteps; g["dispersion"] = d.dispersion; g["dispsteps"] = d.dispsteps;
    g["n_points"] = own.a.n_points; g["polarization"] = d.polarization; g["nopolar"] = d.nopolar;
    g["curved_det"] = d.curved_det; g["point_pixel"] = d.point_pixel; g["fmap"] = own.a.fmap;
    g["pivot"] = (int)d.pivot;
    g["log"] = std::string(d.log ? d.log : "");
    out["setup"] = g;
    return out;
}


// float_add: a and b are the files' bytes; the output has a's length
py::dict float_add(const py::bytes &a_bytes, const py::object &b_obj, const py::dict &kw) {
    nb_float_add_params p;
    std::memset(&p, 0, sizeof p);
    p.scale1 = get<float>(kw, "scale1", 1.0f);
    p.scale2 = get<float>(kw, "scale2", 1.0f);
    p.outscale = get<float>(kw, "outscale", 1.0f);
    p.offset = get<float>(kw, "offset", 0.0f);
    p.outoffset = get<float>(kw, "outoffset", 0.0f);
    p.normalize = get<bool>(kw, "normalize", false);
    p.histogram = get<bool>(kw, "histogram", false);
    p.reject = get<bool>(kw, "reject", false);
    p.binsize = get<float>(kw, "binsize", 1.0f);
    std::vector<float> ignore = get<std::vector<float>>(kw, "ignore", std::vector<float>());
    p.ignore = ignore.data();
    p.n_ignore = (int)ignore.size();
    long header = get<long>(kw, "header", 0);
    std::string a = a_bytes;
    size_t n = a.size();
    if (header < 0 || (size_t)header > n) throw py::value_error("-header is larger than the first file");
    size_t nf = (n + 3) / 4;
    p.header_floats = (size_t)header / 4;
    p.pixels = (n - (size_t)header) / 4;
    std::vector<float> fa(nf + 1, 0.0f), fb, out(nf + 1, 0.0f);
    std::memcpy(fa.data(), a.data(), n);
    bool have_b = !b_obj.is_none();
    if (have_b) {
        std::string b = b_obj.cast<py::bytes>();
        fb.assign(nf + 1, 0.0f);
        std::memcpy(fb.data(), b.data(), b.size() < n ? b.size() : n);
    }
    // the first file's header (and one float more, overwritten by pixel 0)
    size_t head = p.header_floats + 1 < nf ? p.header_floats + 1 : nf;
    std::memcpy(out.data(), fa.data(), head * 4);
    nb_float_add_stats st;
    char err[kErrLen] = "";
    int rc;
    {
        py::gil_scoped_release nogil;
        rc = nb_float_add(&p, fa.data(), have_b ? fb.data() : nullptr, out.data(), &st, err, sizeof err);
    }
    if (rc != NB_OK) raise_engine(err, rc);
    py::dict d;
    d["output"] = py::bytes(reinterpret_cast<const char *>(out.data()), n);
    d["pixels"] = p.pixels;
#define S(name) d[#name] = st.name
    S(valid); S(overflows); S(underflows); S(xy_scale); S(xy_offset); S(yx_scale); S(yx_offset);
    S(max); S(min); S(mean); S(rms); S(rmsd); S(skewness); S(kurtosis); S(CC);
    S(hist_binsize); S(hist_dropped); S(median); S(mad); S(median_max); S(median_min); S(n_median); S(n_mean);
    S(rej_max); S(rej_min); S(rej_mean); S(rej_rms); S(rej_rmsd); S(rej_skewness); S(rej_kurtosis);
#undef S
    py::list hist;
    if (st.hist)
        for (long k = 0; k <= st.hist_bins; k++)
            if (st.hist[k] > 0) hist.append(py::make_tuple((double)(st.hist_binsize * (float)k), st.hist[k]));
    d["histogram"] = st.hist ? py::object(hist) : py::object(py::none());
    nb_float_add_stats_free(&st);
    return d;
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
    m.def("amorphous", &amorphous, py::arg("params"), py::arg("table"), py::arg("sources") = py::none(),
          py::arg("pgm") = true, py::arg("noise") = true, py::arg("seed") = 0, py::arg("nthreads") = 0,
          "Amorphous scattering (nb_amorphous_*): the float image, its int/PGM/noise images and figures.");
    m.def("float_add", &float_add, py::arg("a"), py::arg("b"), py::arg("params"),
          "Add two float images (nb_float_add): the output bytes and the statistics.");
    m.def("smv_header_fields", &smv_header_fields, py::arg("type"), py::arg("fields"),
          "An SMV header from (key, value, integer) fields (nb_smv_header_fields).");
    m.def("pgm_header", &pgm_header, py::arg("width"), py::arg("height"), py::arg("scale"),
          "The P5 header with its '# pixels scaled by' comment.");
}
