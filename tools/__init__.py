"""The toolbox beside `lib`: what make, the terminal and the tests run. `lib` never imports it."""
