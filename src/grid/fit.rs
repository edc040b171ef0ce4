//! Fitting a 2D multiresolution hash encoding to an image (to come).
