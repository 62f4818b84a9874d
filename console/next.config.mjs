/** A static export (out/): any static host, the Helm chart or `tally dev` serves it. */
const config = {
  output: "export",
  trailingSlash: true,
  images: { unoptimized: true },
  reactStrictMode: true,
};
export default config;
