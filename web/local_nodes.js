// The node types the editor may run by itself to compute the picture behind its boxes: each one is
// local (no network, no model), cheap (image-sized tensor work or reading one input file) and free of
// side effects (sends nothing, writes nothing but, for AnyI2V Trajectory, the preview of its image in
// ComfyUI's temp folder, as the editor's own job does). Checked in ComfyUI 0.3.75's sources (nodes.py,
// comfy_extras/*.py) and this pack's nodes/*.py. A chain with any other node runs only when the user
// presses the editor's button or runs the graph.
//
// Core ids cannot be taken over by a custom node pack (ComfyUI's load_custom_node ignores ids that
// nodes.py, comfy_extras and comfy_api_nodes already define), so an id names one implementation.
// Left out on purpose: loaders of folders or datasets (comfy_extras/nodes_dataset: many files, list
// semantics), GetImageSize (sends progress text to the browser), LTXVPreprocess (video encoding),
// FluxKontextImageScale and other model-specific helpers, every output node and every API node.
export const LOCAL_NODES = Object.freeze({
  // nodes.py
  LoadImage: "reads one image file from the input folder",
  LoadImageMask: "reads one image file from the input folder",
  LoadImageOutput: "reads one image file from the output folder",
  EmptyImage: "a solid colour",
  ImageScale: "resizes",
  ImageScaleBy: "resizes",
  ImageInvert: "inverts",
  ImageBatch: "joins two batches",
  ImagePadForOutpaint: "pads",
  // comfy_extras/nodes_images.py
  ImageCrop: "crops",
  ImageFlip: "flips",
  ImageRotate: "rotates",
  ImageFromBatch: "picks images of a batch",
  RepeatImageBatch: "repeats an image",
  ImageStitch: "places images side by side",
  ImageScaleToMaxDimension: "resizes",
  ResizeAndPadImage: "resizes and pads",
  ImageAddNoise: "seeded noise",
  // comfy_extras/nodes_post_processing.py
  ImageScaleToTotalPixels: "resizes",
  ImageBlend: "blends two images",
  ImageBlur: "gaussian blur",
  ImageSharpen: "sharpens",
  ImageQuantize: "reduces colours",
  // comfy_extras/nodes_mask.py
  ImageCompositeMasked: "pastes an image into another",
  ImageToMask: "one channel as a mask",
  MaskToImage: "a mask as an image",
  ImageColorToMask: "a mask of one colour",
  SolidMask: "a constant mask",
  InvertMask: "inverts a mask",
  CropMask: "crops a mask",
  MaskComposite: "combines masks",
  FeatherMask: "softens a mask's edges",
  GrowMask: "grows or shrinks a mask",
  ThresholdMask: "thresholds a mask",
  // comfy_extras/nodes_compositing.py
  PorterDuffImageComposite: "alpha compositing",
  SplitImageWithAlpha: "splits off the alpha channel",
  JoinImageWithAlpha: "adds an alpha channel",
  // comfy_extras/nodes_canny.py, nodes_morphology.py
  Canny: "edge detection",
  Morphology: "erode, dilate and the like",
  ImageRGBToYUV: "colour space conversion",
  ImageYUVToRGB: "colour space conversion",
  // this pack (nodes/conditions.py, nodes/render.py, nodes/trajectory.py)
  AnyI2VMixConditions: "composites two condition images",
  AnyI2VRenderMesh: "renders a mesh file of the input folder",
  AnyI2VRenderPointCloud: "renders a point cloud file of the input folder",
  AnyI2VTrajectory: "parses the trajectory JSON",
  AnyI2VTrajectoryFromCoordinates: "parses coordinates",
  AnyI2VDrawTrajectory: "draws boxes on images",
});
