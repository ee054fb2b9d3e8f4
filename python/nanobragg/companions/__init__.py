"""The companion programs of nanoBragg: nonBragg (amorphous scattering),
noisify (detector response) and float_add (adding and comparing float
images), as commands with the reference's flags."""
